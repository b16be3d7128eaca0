//! The canonical prompt of a Gemini request: `tools`, then `systemInstruction`'s parts, then
//! each of `contents` with its parts (text, inline or file data, function calls and
//! responses). A request that reads a `cachedContent` notes it on the prompt. The REST API
//! takes both lowerCamelCase and snake_case field names; so does this module.

use serde_json::{Map, Value};

use crate::prompt::{Content, Prompt, SegmentKind, StoredContext, text_only};

/// `generateContent`, `streamGenerateContent` and `countTokens` (whose body may wrap the
/// request in `generateContentRequest`). The model is the one in the path.
pub fn generate<'a>(model: &'a str, body: &'a Value) -> Option<Prompt<'a>> {
    let request = body.get("generateContentRequest").unwrap_or(body);
    request_prompt(Some(model), request.as_object()?)
}

/// A `cachedContents` create: the content that a cache will hold, keyed as a request that
/// sends it would be (its model without the `models/` prefix).
pub fn cached_content(body: &Value) -> Option<Prompt<'_>> {
    let body = body.as_object()?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .map(|m| m.trim_start_matches("models/"));
    request_prompt(model, body)
}

fn request_prompt<'a>(model: Option<&'a str>, body: &'a Map<String, Value>) -> Option<Prompt<'a>> {
    let mut prompt = Prompt::new(model);
    prompt.context = field(body, "cachedContent", "cached_content")
        .and_then(Value::as_str)
        .map(StoredContext::GeminiCachedContent);
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        prompt.tools(tools);
    }
    match field(body, "systemInstruction", "system_instruction") {
        Some(Value::String(text)) => prompt.system(SegmentKind::Text, Content::Text(text)),
        Some(instruction) => {
            for p in parts(instruction) {
                let (kind, content) = part(p);
                prompt.system(kind, content);
            }
        }
        None => {}
    }
    let contents = body.get("contents").and_then(Value::as_array);
    for (index, turn) in contents.into_iter().flatten().enumerate() {
        let role = turn.get("role").and_then(Value::as_str);
        prompt.message(index, role, turn, |segments| {
            for p in parts(turn) {
                let (kind, content) = part(p);
                segments.push(kind, content);
            }
        });
    }
    Some(prompt)
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn part(part: &Value) -> (SegmentKind, Content<'_>) {
    if let Some(text) = text_only(part, "text", &["text"]) {
        return (SegmentKind::Text, Content::Text(text));
    }
    let Some(object) = part.as_object() else {
        return (SegmentKind::Other, Content::Json(part));
    };
    let thought = object.get("thought").and_then(Value::as_bool) == Some(true);
    let kind = if object.contains_key("text") && !thought {
        SegmentKind::Text
    } else if let Some(data) = field(object, "inlineData", "inline_data")
        .or_else(|| field(object, "fileData", "file_data"))
    {
        media_kind(data)
    } else if field(object, "functionCall", "function_call").is_some() {
        SegmentKind::ToolCall
    } else if field(object, "functionResponse", "function_response").is_some() {
        SegmentKind::ToolResult
    } else {
        SegmentKind::Other
    };
    (kind, Content::Json(part))
}

fn media_kind(data: &Value) -> SegmentKind {
    let mime = data
        .get("mimeType")
        .or_else(|| data.get("mime_type"))
        .and_then(Value::as_str);
    match mime {
        Some(m) if m.starts_with("image/") => SegmentKind::Image,
        _ => SegmentKind::File,
    }
}

fn field<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}
