//! OpenAI Chat Completions (also DeepSeek's and OpenAI-compatible servers') and Responses:
//! where the question-after-context rewrite and the tool sort find things.
//!
//! Chat: a `user` message's content is a string or parts (`text`, `image_url`, `file`, …).
//! Responses: `input` is a string (one user message) or items, of which `user` messages hold a
//! string or parts (`input_text`, `input_image`, `input_file`, …). A split string stays one
//! string, swapped, since these caches match any token prefix; split parts become two parts.

use serde_json::{Map, Value};

use crate::config::RewriteConfig;
use crate::rewrite::{self, Applied, PartView, Plan};

/// The part types of one API: which hold text and which are context.
struct PartTypes {
    text: &'static str,
    media: &'static [&'static str],
}

const CHAT: PartTypes = PartTypes {
    text: "text",
    media: &["image_url", "file"],
};

const RESPONSES: PartTypes = PartTypes {
    text: "input_text",
    media: &["input_image", "input_file"],
};

pub fn chat_questions(body: &mut Value, config: &RewriteConfig, applied: &mut Applied) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for message in messages.iter_mut().filter(|m| is_user_message(m)) {
        if let Some(content) = message.get_mut("content") {
            edit_content(content, &CHAT, config, applied);
        }
    }
}

pub fn responses_questions(body: &mut Value, config: &RewriteConfig, applied: &mut Applied) {
    let Some(input) = body.get_mut("input") else {
        return;
    };
    let Value::Array(items) = input else {
        edit_content(input, &RESPONSES, config, applied);
        return;
    };
    let messages = items
        .iter_mut()
        .filter(|item| is_user_message(item) && is_message_item(item));
    for message in messages {
        if let Some(content) = message.get_mut("content") {
            edit_content(content, &RESPONSES, config, applied);
        }
    }
}

pub fn sort_chat_tools(body: &mut Value) -> bool {
    let Some(tools) = body.get_mut("tools").and_then(Value::as_array_mut) else {
        return false;
    };
    // `{"type": "function", "function": {"name", …}}` (and likewise for custom tools).
    rewrite::sort_by_name(tools, |tool| {
        let kind = tool.get("type")?.as_str()?;
        tool.get(kind)?.get("name")?.as_str()
    })
}

pub fn sort_responses_tools(body: &mut Value) -> bool {
    let Some(tools) = body.get_mut("tools").and_then(Value::as_array_mut) else {
        return false;
    };
    rewrite::sort_by_name(tools, |tool| tool.get("name").and_then(Value::as_str))
}

/// A `user` message that carries no call of its own (a malformed one is left as sent).
fn is_user_message(message: &Value) -> bool {
    message.get("role").and_then(Value::as_str) == Some("user")
        && message.get("tool_calls").is_none()
        && message.get("function_call").is_none()
}

/// A Responses item that is a message: typed `message`, or untyped (the short input form).
fn is_message_item(item: &Value) -> bool {
    matches!(
        item.get("type").and_then(Value::as_str),
        None | Some("message")
    )
}

fn edit_content(
    content: &mut Value,
    types: &PartTypes,
    config: &RewriteConfig,
    applied: &mut Applied,
) {
    match content {
        Value::String(text) => {
            let whole = PartView::Text { text, plain: true };
            if let Some(Plan::Split(split)) = rewrite::plan(&[whole], config) {
                *text = split.take_pieces(text, config).joined();
                rewrite::note(config, applied);
            }
        }
        Value::Array(parts) => edit_parts(parts, types, config, applied),
        _ => {}
    }
}

fn edit_parts(
    parts: &mut Vec<Value>,
    types: &PartTypes,
    config: &RewriteConfig,
    applied: &mut Applied,
) {
    let views: Vec<PartView<'_>> = parts.iter().map(|part| view(part, types)).collect();
    let Some(plan) = rewrite::plan(&views, config) else {
        return;
    };
    match plan {
        Plan::QuestionLast { questions } => {
            rewrite::move_last(parts, questions, config, text_mut);
        }
        Plan::Split(split) => {
            // The plan splits only a message of one text part.
            let Some(mut part) = std::mem::take(parts).into_iter().next() else {
                return;
            };
            let Some(text) = text_mut(&mut part) else {
                parts.push(part);
                return;
            };
            let pieces = split.take_pieces(text, config);
            *parts = rewrite::split_in_two(part, pieces, text_mut).into();
        }
    }
    rewrite::note(config, applied);
}

fn view<'a>(part: &'a Value, types: &PartTypes) -> PartView<'a> {
    let Some(object) = part.as_object() else {
        return PartView::Other;
    };
    match object.get("type").and_then(Value::as_str) {
        Some(kind) if kind == types.text => match text_of(part) {
            Some(text) => PartView::Text {
                text,
                plain: holds_only(object, &["type", "text"]),
            },
            None => PartView::Other,
        },
        Some(kind) if types.media.contains(&kind) => PartView::Media,
        // Audio is how a question is asked aloud, not context; refusals and the rest are left.
        _ => PartView::Other,
    }
}

fn holds_only(object: &Map<String, Value>, keys: &[&str]) -> bool {
    object.keys().all(|key| keys.contains(&key.as_str()))
}

fn text_of(part: &Value) -> Option<&str> {
    part.get("text").and_then(Value::as_str)
}

fn text_mut(part: &mut Value) -> Option<&mut String> {
    match part.get_mut("text")? {
        Value::String(text) => Some(text),
        _ => None,
    }
}
