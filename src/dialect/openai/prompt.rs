//! The canonical prompt of OpenAI requests (DeepSeek and OpenAI-compatible servers send the
//! chat shape and share [`chat`]).
//!
//! Chat Completions: `tools`, then `messages` in order (a `system` / `developer` message is a
//! message): string or part content, then `tool_calls`; a `tool` message is one tool result.
//! Responses: `tools`, `instructions` (the system prompt), then `input`, a string (one user
//! message) or items: messages with parts, and function calls, their outputs and reasoning as
//! whole items. `previous_response_id` / `conversation` name stored context.

use serde_json::{Map, Value};

use crate::prompt::{Content, MessageParts, Prompt, SegmentKind, StoredContext, text_only};

pub fn chat(body: &Value) -> Option<Prompt<'_>> {
    let body = body.as_object()?;
    let messages = body.get("messages")?.as_array()?;
    let mut prompt = Prompt::new(str_field(body, "model"));
    tools(&mut prompt, body);
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        prompt.message(index, role, message, |parts| {
            chat_message(parts, role, message);
        });
    }
    Some(prompt)
}

fn chat_message<'a>(parts: &mut MessageParts<'_, 'a>, role: Option<&str>, message: &'a Value) {
    if matches!(role, Some("tool" | "function")) {
        // The call id is rendered with the result: the whole message is the segment.
        parts.push(SegmentKind::ToolResult, Content::Json(message));
        return;
    }
    content(parts, message.get("content"));
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        parts.push(SegmentKind::ToolCall, Content::Json(call));
    }
    if let Some(call) = message.get("function_call").filter(|c| c.is_object()) {
        parts.push(SegmentKind::ToolCall, Content::Json(call));
    }
}

pub fn responses(body: &Value) -> Option<Prompt<'_>> {
    let body = body.as_object()?;
    let mut prompt = Prompt::new(str_field(body, "model"));
    prompt.context = stored_context(body);
    tools(&mut prompt, body);
    if let Some(instructions) = str_field(body, "instructions") {
        prompt.system(SegmentKind::Text, Content::Text(instructions));
    }
    match body.get("input") {
        Some(input @ Value::String(text)) => prompt.message(0, Some("user"), input, |parts| {
            parts.push(SegmentKind::Text, Content::Text(text));
        }),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                response_item(&mut prompt, index, item);
            }
        }
        _ => {}
    }
    Some(prompt)
}

fn response_item<'a>(prompt: &mut Prompt<'a>, index: usize, item: &'a Value) {
    let role = item.get("role").and_then(Value::as_str);
    let kind = item.get("type").and_then(Value::as_str);
    prompt.message(index, role, item, |parts| {
        if role.is_some() && matches!(kind, None | Some("message")) {
            content(parts, item.get("content"));
        } else {
            parts.push(item_kind(kind), Content::Json(item));
        }
    });
}

/// `function_call`, `web_search_call`, … are calls; `function_call_output`, … their results.
fn item_kind(kind: Option<&str>) -> SegmentKind {
    match kind {
        Some(k) if k.ends_with("_output") => SegmentKind::ToolResult,
        Some(k) if k.ends_with("_call") => SegmentKind::ToolCall,
        _ => SegmentKind::Other,
    }
}

/// String content is one text part; array content is parts (chat and Responses share it).
fn content<'a>(parts: &mut MessageParts<'_, 'a>, content: Option<&'a Value>) {
    match content {
        Some(Value::String(text)) => parts.push(SegmentKind::Text, Content::Text(text)),
        Some(Value::Array(items)) => {
            for part in items {
                let (kind, content) = content_part(part);
                parts.push(kind, content);
            }
        }
        _ => {}
    }
}

fn content_part(part: &Value) -> (SegmentKind, Content<'_>) {
    let kind = match part.get("type").and_then(Value::as_str) {
        Some("text" | "input_text" | "output_text") => SegmentKind::Text,
        Some("image_url" | "input_image") => SegmentKind::Image,
        Some("file" | "input_file" | "input_audio") => SegmentKind::File,
        _ => SegmentKind::Other,
    };
    // `cache_control` on a part is what OpenAI-compatible routers accept as a marker.
    match text_only(part, "text", &["type", "text", "cache_control"]) {
        Some(text) if kind == SegmentKind::Text => (kind, Content::Text(text)),
        _ => (kind, Content::Json(part)),
    }
}

fn tools<'a>(prompt: &mut Prompt<'a>, body: &'a Map<String, Value>) {
    if let Some(defs) = body.get("tools").and_then(Value::as_array) {
        prompt.tools(defs);
    }
}

fn stored_context(body: &Map<String, Value>) -> Option<StoredContext<'_>> {
    if let Some(id) = str_field(body, "previous_response_id") {
        return Some(StoredContext::PreviousResponse(id));
    }
    let conversation = body.get("conversation")?;
    conversation
        .as_str()
        .or_else(|| conversation.get("id")?.as_str())
        .map(StoredContext::Conversation)
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}
