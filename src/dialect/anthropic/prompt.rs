//! The canonical prompt of an Anthropic Messages request, in the order its cache prefixes
//! are built: `tools`, then `system` (a string or text blocks), then `messages`, each a string
//! or blocks (text, image, document, tool_use, tool_result, thinking, …).

use serde_json::Value;

use crate::prompt::{Content, Prompt, SegmentKind, text_only};

pub fn messages(body: &Value) -> Option<Prompt<'_>> {
    let body = body.as_object()?;
    let messages = body.get("messages")?.as_array()?;
    let mut prompt = Prompt::new(body.get("model").and_then(Value::as_str));
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        prompt.tools(tools);
    }
    match body.get("system") {
        Some(Value::String(text)) => prompt.system(SegmentKind::Text, Content::Text(text)),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                let (kind, content) = block(b);
                prompt.system(kind, content);
            }
        }
        _ => {}
    }
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        prompt.message(index, role, message, |parts| match message.get("content") {
            Some(Value::String(text)) => parts.push(SegmentKind::Text, Content::Text(text)),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    let (kind, content) = block(b);
                    parts.push(kind, content);
                }
            }
            _ => {}
        });
    }
    Some(prompt)
}

/// A content block. A text block that carries only its text (and a marker) is plain text, as
/// a string would be; one with citations, say, stays structured.
fn block(block: &Value) -> (SegmentKind, Content<'_>) {
    let kind = match block.get("type").and_then(Value::as_str) {
        Some("text") => SegmentKind::Text,
        Some("image") => SegmentKind::Image,
        Some("document") => SegmentKind::File,
        // tool_use, server_tool_use, mcp_tool_use; tool_result, web_search_tool_result, …
        Some(t) if t.ends_with("tool_use") => SegmentKind::ToolCall,
        Some(t) if t.ends_with("tool_result") => SegmentKind::ToolResult,
        _ => SegmentKind::Other,
    };
    match text_only(block, "text", &["type", "text", "cache_control"]) {
        Some(text) if kind == SegmentKind::Text => (kind, Content::Text(text)),
        _ => (kind, Content::Json(block)),
    }
}
