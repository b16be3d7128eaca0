//! A provider-neutral conversation and its rendering into each provider's request: the only
//! code in `replay` that knows provider JSON.
//!
//! | provider | path | auth | body |
//! |---|---|---|---|
//! | anthropic | `/v1/messages` | `x-api-key`, `anthropic-version: 2023-06-01` | `{model, max_tokens, system: [text blocks], tools, messages}` |
//! | openai, vllm | `/v1/chat/completions` | `authorization: Bearer` | `{model, messages (system first), tools, max_tokens}` |
//! | deepseek | `/chat/completions` | `authorization: Bearer` | as openai |
//! | gemini | `/v1beta/models/{model}:generateContent` | `x-goog-api-key` | `{systemInstruction, tools, contents, generationConfig}` |
//!
//! Empty `system` and `tools` are left out. No `cache_control` ever: the clients these
//! workloads stand for send no markers, placing them is the proxy's job. The driver adds
//! `content-type`.

use serde_json::{Map, Value, json};

use super::{Provider, Request};

/// What a client asks, before any provider's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// System text blocks, in order.
    pub system: Vec<String>,
    pub tools: Vec<Tool>,
    pub messages: Vec<Message>,
    /// The output cap (`max_tokens`, `maxOutputTokens`).
    pub max_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments, an object schema.
    pub parameters: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// One string: a string content wherever the dialect allows one.
    Text(String),
    /// Ordered parts: content blocks (Anthropic), an array of parts (OpenAI), parts (Gemini).
    Parts(Vec<Part>),
    /// One string that the question-after-context rewrite split in two, first part first
    /// (`../shared/DESIGN.md`, "Question after context"): two text blocks for Anthropic, so a
    /// breakpoint can sit between them; the two concatenated into one string for OpenAI and
    /// DeepSeek, whose caches match any token prefix; two consecutive user Contents for Gemini,
    /// so the first can go into a cached content (`gemini_split_turn`).
    Split(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The answer to the `ToolUse` with the same `id`; Gemini matches it by `name`.
    ToolResult {
        id: String,
        name: String,
        content: String,
    },
}

impl Message {
    pub fn user(content: Content) -> Self {
        Self {
            role: Role::User,
            content,
        }
    }

    pub fn assistant(content: Content) -> Self {
        Self {
            role: Role::Assistant,
            content,
        }
    }
}

/// `conversation` as `provider`'s client would send it at `t`.
pub fn render(
    provider: Provider,
    model: &str,
    key: &str,
    t: f64,
    conversation: &Conversation,
) -> Request {
    Request {
        t,
        upstream: provider.upstream().to_owned(),
        path: path(provider, model),
        headers: headers(provider, key),
        body: body(provider, model, conversation),
    }
}

fn path(provider: Provider, model: &str) -> String {
    match provider {
        Provider::Anthropic => "/v1/messages".to_owned(),
        Provider::OpenAi | Provider::Vllm => "/v1/chat/completions".to_owned(),
        Provider::DeepSeek => "/chat/completions".to_owned(),
        Provider::Gemini => format!("/v1beta/models/{model}:generateContent"),
    }
}

fn headers(provider: Provider, key: &str) -> Vec<(String, String)> {
    let pair = |name: &str, value: String| (name.to_owned(), value);
    match provider {
        Provider::Anthropic => vec![
            pair("x-api-key", key.to_owned()),
            pair("anthropic-version", "2023-06-01".to_owned()),
        ],
        Provider::OpenAi | Provider::DeepSeek | Provider::Vllm => {
            vec![pair("authorization", format!("Bearer {key}"))]
        }
        Provider::Gemini => vec![pair("x-goog-api-key", key.to_owned())],
    }
}

fn body(provider: Provider, model: &str, conversation: &Conversation) -> Value {
    match provider {
        Provider::Anthropic => anthropic::body(model, conversation),
        Provider::OpenAi | Provider::DeepSeek | Provider::Vllm => openai::body(model, conversation),
        Provider::Gemini => gemini::body(conversation),
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

mod anthropic {
    use super::*;

    pub(super) fn body(model: &str, conversation: &Conversation) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("max_tokens".into(), json!(conversation.max_tokens));
        if !conversation.system.is_empty() {
            let blocks = conversation.system.iter().map(|s| text_block(s)).collect();
            body.insert("system".into(), Value::Array(blocks));
        }
        if !conversation.tools.is_empty() {
            let tools = conversation.tools.iter().map(tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        let messages = conversation.messages.iter().map(message).collect();
        body.insert("messages".into(), Value::Array(messages));
        Value::Object(body)
    }

    fn tool(tool: &Tool) -> Value {
        json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters})
    }

    fn message(message: &Message) -> Value {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content = match &message.content {
            Content::Text(text) => json!(text),
            Content::Parts(parts) => Value::Array(parts.iter().map(block).collect()),
            Content::Split(first, second) => json!([text_block(first), text_block(second)]),
        };
        json!({"role": role, "content": content})
    }

    fn block(part: &Part) -> Value {
        match part {
            Part::Text(text) => text_block(text),
            Part::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
            Part::ToolResult { id, content, .. } => {
                json!({"type": "tool_result", "tool_use_id": id, "content": content})
            }
        }
    }
}

mod openai {
    use super::*;

    pub(super) fn body(model: &str, conversation: &Conversation) -> Value {
        let mut messages = Vec::with_capacity(conversation.messages.len() + 1);
        match conversation.system.as_slice() {
            [] => {}
            [one] => messages.push(json!({"role": "system", "content": one})),
            many => messages.push(json!({"role": "system", "content": text_parts(many)})),
        }
        for message in &conversation.messages {
            push_message(&mut messages, message);
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), Value::Array(messages));
        if !conversation.tools.is_empty() {
            let tools = conversation.tools.iter().map(tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        body.insert("max_tokens".into(), json!(conversation.max_tokens));
        Value::Object(body)
    }

    fn tool(tool: &Tool) -> Value {
        json!({"type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": tool.parameters,
        }})
    }

    fn text_parts<S: AsRef<str>>(texts: &[S]) -> Value {
        Value::Array(texts.iter().map(|t| text_block(t.as_ref())).collect())
    }

    fn push_message(out: &mut Vec<Value>, message: &Message) {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match &message.content {
            Content::Text(text) => out.push(json!({"role": role, "content": text})),
            Content::Split(first, second) => {
                out.push(json!({"role": role, "content": format!("{first}{second}")}));
            }
            Content::Parts(parts) => match message.role {
                Role::Assistant => out.push(assistant(parts)),
                Role::User => push_user_parts(out, parts),
            },
        }
    }

    /// Text parts become the content (a string when there is one, none when there is none);
    /// tool uses become `tool_calls`, whose `arguments` are a JSON string.
    fn assistant(parts: &[Part]) -> Value {
        let texts: Vec<&str> = parts
            .iter()
            .filter_map(|part| match part {
                Part::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let calls: Vec<Value> = parts
            .iter()
            .filter_map(|part| match part {
                Part::ToolUse { id, name, input } => Some(json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                })),
                _ => None,
            })
            .collect();
        let content = match texts.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => text_parts(many),
        };
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), content);
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        Value::Object(message)
    }

    /// Tool results first, one `tool` message each, then the user's text parts: OpenAI requires
    /// the answers to an assistant's `tool_calls` to follow it directly.
    fn push_user_parts(out: &mut Vec<Value>, parts: &[Part]) {
        let mut texts = Vec::new();
        for part in parts {
            match part {
                Part::ToolResult { id, content, .. } => {
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
                Part::Text(text) => texts.push(text.as_str()),
                // A user never calls a tool; nothing to send.
                Part::ToolUse { .. } => {}
            }
        }
        if !texts.is_empty() {
            out.push(json!({"role": "user", "content": text_parts(&texts)}));
        }
    }
}

mod gemini {
    use super::*;

    pub(super) fn body(conversation: &Conversation) -> Value {
        let mut body = Map::new();
        if !conversation.system.is_empty() {
            let parts: Vec<Value> = conversation.system.iter().map(|s| text(s)).collect();
            body.insert("systemInstruction".into(), json!({"parts": parts}));
        }
        if !conversation.tools.is_empty() {
            let declarations: Vec<Value> = conversation.tools.iter().map(declaration).collect();
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
        }
        let mut contents = Vec::with_capacity(conversation.messages.len());
        for message in &conversation.messages {
            push_contents(&mut contents, message);
        }
        body.insert("contents".into(), Value::Array(contents));
        body.insert(
            "generationConfig".into(),
            json!({"maxOutputTokens": conversation.max_tokens}),
        );
        Value::Object(body)
    }

    fn text(text: &str) -> Value {
        json!({"text": text})
    }

    fn declaration(tool: &Tool) -> Value {
        json!({"name": tool.name, "description": tool.description, "parameters": tool.parameters})
    }

    fn push_contents(out: &mut Vec<Value>, message: &Message) {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        match &message.content {
            Content::Text(t) => out.push(json!({"role": role, "parts": [text(t)]})),
            Content::Split(first, second) => {
                out.push(json!({"role": role, "parts": [text(first)]}));
                out.push(json!({"role": role, "parts": [text(second)]}));
            }
            Content::Parts(parts) => {
                let parts: Vec<Value> = parts.iter().map(part).collect();
                out.push(json!({"role": role, "parts": parts}));
            }
        }
    }

    fn part(part: &Part) -> Value {
        match part {
            Part::Text(t) => text(t),
            Part::ToolUse { name, input, .. } => {
                json!({"functionCall": {"name": name, "args": input}})
            }
            Part::ToolResult { name, content, .. } => {
                json!({"functionResponse": {"name": name, "response": {"output": content}}})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Conversation {
        Conversation {
            system: vec!["sys".into()],
            tools: vec![Tool {
                name: "read".into(),
                description: "reads".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            }],
            messages: vec![
                Message::user(Content::Text("hi".into())),
                Message::assistant(Content::Parts(vec![
                    Part::Text("looking".into()),
                    Part::ToolUse {
                        id: "c1".into(),
                        name: "read".into(),
                        input: json!({"path": "a"}),
                    },
                ])),
                Message::user(Content::Parts(vec![
                    Part::ToolResult {
                        id: "c1".into(),
                        name: "read".into(),
                        content: "data".into(),
                    },
                    Part::Text("note".into()),
                ])),
                Message::user(Content::Split("doc\n\n".into(), "q?".into())),
            ],
            max_tokens: 300,
        }
    }

    #[test]
    fn anthropic_shape() {
        let request = render(Provider::Anthropic, "m", "k", 1.5, &sample());
        assert_eq!(request.path, "/v1/messages");
        assert_eq!(request.upstream, "anthropic");
        assert_eq!(
            request.headers,
            vec![
                ("x-api-key".to_owned(), "k".to_owned()),
                ("anthropic-version".to_owned(), "2023-06-01".to_owned())
            ]
        );
        let expected = json!({
            "model": "m", "max_tokens": 300,
            "system": [{"type": "text", "text": "sys"}],
            "tools": [{"name": "read", "description": "reads",
                       "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "looking"},
                    {"type": "tool_use", "id": "c1", "name": "read", "input": {"path": "a"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "data"},
                    {"type": "text", "text": "note"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "doc\n\n"}, {"type": "text", "text": "q?"}]},
            ],
        });
        assert_eq!(request.body.to_string(), expected.to_string());
    }

    #[test]
    fn openai_and_deepseek_shape() {
        let request = render(Provider::OpenAi, "gpt", "k", 0.0, &sample());
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(
            request.headers,
            vec![("authorization".to_owned(), "Bearer k".to_owned())]
        );
        let expected = json!({
            "model": "gpt",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "looking", "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "data"},
                {"role": "user", "content": [{"type": "text", "text": "note"}]},
                {"role": "user", "content": "doc\n\nq?"},
            ],
            "tools": [{"type": "function", "function": {"name": "read", "description": "reads",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
            "max_tokens": 300,
        });
        assert_eq!(request.body.to_string(), expected.to_string());
        let deepseek = render(Provider::DeepSeek, "gpt", "k", 0.0, &sample());
        assert_eq!(deepseek.path, "/chat/completions");
        assert_eq!(deepseek.body, request.body);
    }

    #[test]
    fn gemini_shape() {
        let request = render(Provider::Gemini, "gem", "k", 0.0, &sample());
        assert_eq!(request.path, "/v1beta/models/gem:generateContent");
        assert_eq!(
            request.headers,
            vec![("x-goog-api-key".to_owned(), "k".to_owned())]
        );
        let expected = json!({
            "systemInstruction": {"parts": [{"text": "sys"}]},
            "tools": [{"functionDeclarations": [{"name": "read", "description": "reads",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]}],
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "looking"},
                    {"functionCall": {"name": "read", "args": {"path": "a"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "read", "response": {"output": "data"}}},
                    {"text": "note"}]},
                {"role": "user", "parts": [{"text": "doc\n\n"}]},
                {"role": "user", "parts": [{"text": "q?"}]},
            ],
            "generationConfig": {"maxOutputTokens": 300},
        });
        assert_eq!(request.body.to_string(), expected.to_string());
    }

    #[test]
    fn empty_system_and_tools_are_left_out() {
        let conversation = Conversation {
            system: vec![],
            tools: vec![],
            messages: vec![Message::user(Content::Text("x".into()))],
            max_tokens: 5,
        };
        let body = render(Provider::Vllm, "sim", "k", 0.0, &conversation).body;
        assert_eq!(
            body.to_string(),
            r#"{"model":"sim","messages":[{"role":"user","content":"x"}],"max_tokens":5}"#
        );
        let body = render(Provider::Anthropic, "m", "k", 0.0, &conversation).body;
        assert!(body.get("system").is_none() && body.get("tools").is_none());
        let body = render(Provider::Gemini, "m", "k", 0.0, &conversation).body;
        assert!(body.get("systemInstruction").is_none() && body.get("tools").is_none());
    }
}
