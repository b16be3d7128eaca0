//! A catalogue of 12 tool definitions, about 3k o200k tokens in all, for the agent and volatile
//! workloads, and the arguments a call to one of them carries.

use serde_json::{Map, Value, json};

use super::dialect::Tool;
use super::text;
use crate::replay::rng::Rng;

const NAMES: [&str; 12] = [
    "read_file",
    "write_file",
    "list_directory",
    "search_code",
    "run_command",
    "fetch_url",
    "query_database",
    "send_message",
    "create_ticket",
    "get_weather",
    "lookup_calendar",
    "translate_text",
];

/// Parameter names and their JSON Schema types.
const PARAMETERS: [(&str, &str); 20] = [
    ("path", "string"),
    ("query", "string"),
    ("limit", "integer"),
    ("offset", "integer"),
    ("pattern", "string"),
    ("content", "string"),
    ("url", "string"),
    ("timeout", "integer"),
    ("recursive", "boolean"),
    ("language", "string"),
    ("format", "string"),
    ("target", "string"),
    ("message", "string"),
    ("title", "string"),
    ("priority", "integer"),
    ("date", "string"),
    ("city", "string"),
    ("text", "string"),
    ("source", "string"),
    ("include_hidden", "boolean"),
];

/// The 12 tools, drawn from `rng`: a ~80-token description each and 3–6 described parameters,
/// the first two required.
pub fn catalog(rng: &mut Rng) -> Vec<Tool> {
    NAMES.iter().map(|name| tool(rng, name)).collect()
}

fn tool(rng: &mut Rng, name: &str) -> Tool {
    let size = rng.between(65, 100) as usize;
    let description = text::sentences(rng, size);
    let mut names = PARAMETERS;
    rng.shuffle(&mut names);
    let count = rng.between(3, 6) as usize;
    let mut properties = Map::new();
    for (param, kind) in names.iter().take(count) {
        let size = rng.between(10, 20) as usize;
        let about = text::sentences(rng, size);
        properties.insert(
            (*param).to_owned(),
            json!({"type": kind, "description": about}),
        );
    }
    let required: Vec<&str> = names.iter().take(2).map(|(param, _)| *param).collect();
    Tool {
        name: name.to_owned(),
        description,
        parameters: json!({"type": "object", "properties": properties, "required": required}),
    }
}

/// Arguments for a call to `tool`: every parameter, with a value of its type.
pub fn arguments(rng: &mut Rng, tool: &Tool) -> Value {
    let mut args = Map::new();
    let properties = tool.parameters.get("properties").and_then(Value::as_object);
    for (param, schema) in properties.into_iter().flatten() {
        let value = match schema.get("type").and_then(Value::as_str) {
            Some("integer") => json!(rng.between(1, 100)),
            Some("boolean") => json!(rng.chance(0.5)),
            _ => {
                let n = rng.between(1, 4) as usize;
                json!(text::words(rng, n))
            }
        };
        args.insert(param.clone(), value);
    }
    Value::Object(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::workload::text::o200k;

    #[test]
    fn about_three_thousand_tokens_of_definitions() {
        // The catalogue is the first draw of both workloads that use it.
        for seed in [super::super::agent::SEED, super::super::volatile::SEED] {
            let tools = catalog(&mut Rng::new(seed));
            assert_eq!(tools.len(), 12);
            let rendered: Vec<Value> = tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
            let tokens = o200k(&Value::Array(rendered).to_string());
            assert!((2_800..=3_200).contains(&tokens), "{tokens}");
        }
    }

    #[test]
    fn arguments_cover_every_parameter() {
        let mut rng = Rng::new(2);
        let tools = catalog(&mut rng);
        for tool in &tools {
            let args = arguments(&mut rng, tool);
            let properties = tool.parameters["properties"].as_object().unwrap();
            assert_eq!(args.as_object().unwrap().len(), properties.len());
        }
    }
}
