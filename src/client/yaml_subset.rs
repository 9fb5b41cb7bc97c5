//! The part of YAML that PM2's `process.yml` files use, read into JSON values for
//! `clusterctl import`: block mappings and sequences by indentation, `- key: value` items,
//! quoted and plain scalars (numbers, booleans, null), one-line flow lists `['a', 'b']`, and
//! comments. A file that is JSON (YAML's flow style) is read as JSON. Anything else — anchors,
//! multi-line strings, tabs — is refused with a message naming the line, rather than guessed.

use serde_json::{Map, Value};

/// One meaningful line: its indentation and its text without the comment.
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

pub fn parse(text: &str) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(value);
    }
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim_start().starts_with('\t') || raw.starts_with('\t') {
            return Err(format!("line {number}: a tab in the indentation"));
        }
        let content = strip_comment(raw);
        if content.trim().is_empty() || content.trim() == "---" {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        lines.push(Line {
            number,
            indent,
            text: content.trim().to_string(),
        });
    }
    if lines.is_empty() {
        return Err("the file is empty".into());
    }
    let mut at = 0;
    let indent = lines[0].indent;
    let value = block(&mut lines, &mut at, indent)?;
    if let Some(line) = lines.get(at) {
        return Err(format!("line {}: unexpected indentation", line.number));
    }
    Ok(value)
}

/// The text before a `#` that starts a comment (not one inside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous == ' ' || i == 0 => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The block (a mapping or a sequence) whose lines start at `indent`.
fn block(lines: &mut [Line], at: &mut usize, indent: usize) -> Result<Value, String> {
    if lines[*at].text == "-" || lines[*at].text.starts_with("- ") {
        sequence(lines, at, indent)
    } else {
        mapping(lines, at, indent)
    }
}

fn sequence(lines: &mut [Line], at: &mut usize, indent: usize) -> Result<Value, String> {
    let mut items = Vec::new();
    while *at < lines.len() && lines[*at].indent == indent {
        let (number, text) = (lines[*at].number, lines[*at].text.clone());
        let Some(rest) = text.strip_prefix('-').map(str::trim_start) else {
            return Err(format!("line {number}: expected a `- ` item"));
        };
        if rest.is_empty() {
            *at += 1;
            match lines.get(*at) {
                Some(next) if next.indent > indent => {
                    let deeper = next.indent;
                    items.push(block(lines, at, deeper)?);
                }
                _ => items.push(Value::Null),
            }
        } else if split_key(rest).is_some() && !rest.starts_with(['[', '{', '\'', '"']) {
            // `- key: value`: a mapping whose first line follows the dash; the rest of it is
            // indented to where that key starts.
            let inner = indent + (text.len() - rest.len());
            lines[*at].indent = inner;
            lines[*at].text = rest.to_string();
            items.push(mapping(lines, at, inner)?);
        } else {
            items.push(scalar(rest, number)?);
            *at += 1;
        }
    }
    Ok(Value::Array(items))
}

fn mapping(lines: &mut [Line], at: &mut usize, indent: usize) -> Result<Value, String> {
    let mut map = Map::new();
    while *at < lines.len() && lines[*at].indent == indent {
        let number = lines[*at].number;
        let Some((key, rest)) = split_key(&lines[*at].text) else {
            return Err(format!("line {number}: expected `key: value`"));
        };
        *at += 1;
        let value = if rest.is_empty() {
            match lines.get(*at) {
                Some(next) if next.indent > indent => {
                    let deeper = next.indent;
                    block(lines, at, deeper)?
                }
                // A sequence may sit at the key's own indentation.
                Some(next) if next.indent == indent && next.text.starts_with('-') => {
                    sequence(lines, at, indent)?
                }
                _ => Value::Null,
            }
        } else {
            scalar(&rest, number)?
        };
        map.insert(key, value);
    }
    Ok(Value::Object(map))
}

/// `key: value` (or `key:`) with the key unquoted; `None` if the text is no such line.
fn split_key(text: &str) -> Option<(String, String)> {
    let (key, rest) = if let Some(quoted) = text.strip_prefix(['\'', '"']) {
        let q = text.chars().next()?;
        let end = quoted.find(q)?;
        let after = quoted[end + 1..].trim_start();
        (quoted[..end].to_string(), after.strip_prefix(':')?)
    } else {
        let colon = text
            .char_indices()
            .find(|&(i, c)| c == ':' && text[i + 1..].chars().next().is_none_or(|n| n == ' '))
            .map(|(i, _)| i)?;
        (text[..colon].trim().to_string(), &text[colon + 1..])
    };
    Some((key, rest.trim().to_string()))
}

/// One value on one line.
fn scalar(text: &str, number: usize) -> Result<Value, String> {
    let unsupported = |what: &str| {
        Err(format!(
            "line {number}: {what} is not read by clusterctl import; convert the file to JSON"
        ))
    };
    match text.chars().next() {
        Some('&' | '*') => return unsupported("an anchor or alias"),
        Some('|' | '>') => return unsupported("a multi-line string"),
        Some('!') => return unsupported("a tag"),
        _ => {}
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or(format!("line {number}: a quote is not closed"))?;
        return Ok(Value::String(inner.replace("''", "'")));
    }
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text)
            .map(Value::String)
            .map_err(|_| format!("line {number}: a quoted string that cannot be read"));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(format!(
            "line {number}: a list that does not end on its line"
        ))?;
        return inner
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| scalar(item, number))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if text.starts_with('{') {
        return serde_json::from_str(text)
            .or_else(|_| unsupported("a flow mapping that is not JSON"));
    }
    Ok(match text {
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        "null" | "Null" | "NULL" | "~" => Value::Null,
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pm2s_process_yml_reads_as_its_json() {
        let text = "apps:\n  - name : 'HTTP-API'\n    script: 'apps/http.js'\n    instances: 'max'\n    watch : true\n    ignore_watch : ['node_modules', \"logs\"]\n    env:\n      NODE_ENV : 'development'   # a comment\n      PORT: 3000\n  - name : 'Worker'\n    script: apps/worker.js\n    interpreter_args: -u\n";
        assert_eq!(
            parse(text).expect("parses"),
            json!({"apps": [
                {"name": "HTTP-API", "script": "apps/http.js", "instances": "max", "watch": true,
                 "ignore_watch": ["node_modules", "logs"],
                 "env": {"NODE_ENV": "development", "PORT": 3000}},
                {"name": "Worker", "script": "apps/worker.js", "interpreter_args": "-u"}
            ]})
        );
    }

    #[test]
    fn a_top_level_list_and_json_are_read_and_the_rest_is_refused_by_line() {
        assert_eq!(
            parse("- script : './index.js'\n  name : 'custom-actions'\n").expect("parses"),
            json!([{"script": "./index.js", "name": "custom-actions"}])
        );
        assert_eq!(parse("{\"apps\": []}").expect("json"), json!({"apps": []}));
        assert!(parse("apps:\n  - name: &a x\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse("apps:\n  - args: |\n      x\n")
            .unwrap_err()
            .contains("multi-line"));
        assert!(parse("").unwrap_err().contains("empty"));
    }
}
