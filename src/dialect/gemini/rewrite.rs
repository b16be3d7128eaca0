//! Gemini `generateContent`: where the question-after-context rewrite and the tool sort find
//! things. A user Content (role `user`, or none: Gemini reads a missing role as the user's)
//! holds parts: `text`, `inlineData`, `fileData`, function calls and responses. A split text
//! becomes two consecutive user Contents, so the first can go into a cached content.

use serde_json::Value;

use crate::config::RewriteConfig;
use crate::rewrite::{self, Applied, PartView, Plan, Rewrite, Turns};

/// Part fields that carry a document: context whatever their size. The REST API writes
/// camelCase; the proto JSON parser also accepts snake_case, so clients send either.
const MEDIA: [&str; 4] = ["inlineData", "inline_data", "fileData", "file_data"];
/// Part fields of tool use: a Content holding one is never touched.
const TOOLS: [&str; 8] = [
    "functionCall",
    "function_call",
    "functionResponse",
    "function_response",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
];

pub fn questions(body: &mut Value, config: &RewriteConfig, turns: Turns, applied: &mut Applied) {
    let Some(contents) = body.get_mut("contents").and_then(Value::as_array_mut) else {
        return;
    };
    let plans: Vec<Option<Plan>> = contents.iter().map(|c| plan(c, config)).collect();
    if plans.iter().all(Option::is_none) {
        return;
    }
    let sent = std::mem::take(contents);
    for (content, plan) in sent.into_iter().zip(plans) {
        match plan {
            Some(plan) => apply(content, plan, config, turns, applied, contents),
            None => contents.push(content),
        }
    }
}

/// Pushes `content` as `plan` rewrites it: in place, or as two user Contents.
fn apply(
    mut content: Value,
    plan: Plan,
    config: &RewriteConfig,
    turns: Turns,
    applied: &mut Applied,
    out: &mut Vec<Value>,
) {
    match plan {
        Plan::QuestionLast { questions } => {
            if let Some(parts) = parts_mut(&mut content) {
                rewrite::move_last(parts, questions, config, text_mut);
            }
            out.push(content);
        }
        Plan::Split(split) => {
            let Some(text) = first_text_mut(&mut content) else {
                out.push(content);
                return;
            };
            let pieces = split.take_pieces(text, config);
            match turns {
                Turns::Split => {
                    out.extend(rewrite::split_in_two(content, pieces, first_text_mut));
                    applied.insert(Rewrite::GeminiSplitTurn);
                }
                Turns::Keep => {
                    *text = pieces.joined();
                    out.push(content);
                }
            }
        }
    }
    rewrite::note(config, applied);
}

pub fn sort_tools(body: &mut Value) -> bool {
    let Some(tools) = body.get_mut("tools").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut sorted = false;
    for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
        for key in ["functionDeclarations", "function_declarations"] {
            if let Some(Value::Array(declarations)) = tool.get_mut(key) {
                sorted |=
                    rewrite::sort_by_name(declarations, |d| d.get("name").and_then(Value::as_str));
            }
        }
    }
    sorted
}

fn plan(content: &Value, config: &RewriteConfig) -> Option<Plan> {
    let role = content.get("role").and_then(Value::as_str);
    if !matches!(role, None | Some("user")) {
        return None;
    }
    let parts = content.get("parts")?.as_array()?;
    let views: Vec<PartView<'_>> = parts.iter().map(view).collect();
    rewrite::plan(&views, config)
}

fn view(part: &Value) -> PartView<'_> {
    let Some(object) = part.as_object() else {
        return PartView::Other;
    };
    if TOOLS.iter().any(|key| object.contains_key(*key)) {
        return PartView::Tool;
    }
    if MEDIA.iter().any(|key| object.contains_key(*key)) {
        return PartView::Media;
    }
    match object.get("text").and_then(Value::as_str) {
        Some(text) => PartView::Text {
            text,
            plain: object.len() == 1,
        },
        None => PartView::Other,
    }
}

fn parts_mut(content: &mut Value) -> Option<&mut Vec<Value>> {
    content.get_mut("parts")?.as_array_mut()
}

fn first_text_mut(content: &mut Value) -> Option<&mut String> {
    text_mut(parts_mut(content)?.first_mut()?)
}

fn text_mut(part: &mut Value) -> Option<&mut String> {
    match part.get_mut("text")? {
        Value::String(text) => Some(text),
        _ => None,
    }
}
