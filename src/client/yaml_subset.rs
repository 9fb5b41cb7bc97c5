//! The part of YAML that PM2's `process.yml` files use, read into JSON values for
//! `clusterctl import`: block mappings and sequences by indentation, `- key: value` items,
//! quoted and plain scalars (numbers, booleans, null), one-line flow lists `['a', 'b']`, and
//! comments. A file in YAML's flow style (it starts with `{` or `[`) is read as JSON5. Anything
//! else — anchors, multi-line strings, tabs — is refused with a message naming the line,
//! rather than guessed. Nesting is limited to [`MAX_DEPTH`] levels, as in the JSON5 reader:
//! the parser recurses, and a hostile file must not exhaust the stack.

use serde_json::{Map, Value};

use super::json5::MAX_DEPTH;

/// One meaningful line: its indentation and its text without the comment.
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

pub fn parse(text: &str) -> Result<Value, String> {
    let flow = text
        .lines()
        .map(|line| strip_comment(line).trim())
        .find(|line| !line.is_empty() && *line != "---");
    if flow.is_some_and(|line| line.starts_with(['{', '['])) {
        // YAML's comment lines blanked (JSON5 has other comments), so lines keep their numbers.
        let json5: Vec<&str> = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with('#') {
                    ""
                } else {
                    line
                }
            })
            .collect();
        return super::json5::parse(&json5.join("\n"));
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
    let value = block(&mut lines, &mut at, indent, 0)?;
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

/// The block (a mapping or a sequence) whose lines start at `indent`, `depth` levels down.
fn block(lines: &mut [Line], at: &mut usize, indent: usize, depth: usize) -> Result<Value, String> {
    let Some(line) = lines.get(*at) else {
        return Ok(Value::Null);
    };
    if line.text == "-" || line.text.starts_with("- ") {
        sequence(lines, at, indent, depth)
    } else {
        mapping(lines, at, indent, depth)
    }
}

/// The error of a block or list nested deeper than [`MAX_DEPTH`], else nothing.
fn too_deep(depth: usize, number: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "line {number}: nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

fn sequence(
    lines: &mut [Line],
    at: &mut usize,
    indent: usize,
    depth: usize,
) -> Result<Value, String> {
    too_deep(depth, lines.get(*at).map_or(0, |l| l.number))?;
    let depth = depth + 1;
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
                    items.push(block(lines, at, deeper, depth)?);
                }
                _ => items.push(Value::Null),
            }
        } else if split_key(rest).is_some() && !rest.starts_with(['[', '{', '\'', '"']) {
            // `- key: value`: a mapping whose first line follows the dash; the rest of it is
            // indented to where that key starts.
            let inner = indent + (text.len() - rest.len());
            lines[*at].indent = inner;
            lines[*at].text = rest.to_string();
            items.push(mapping(lines, at, inner, depth)?);
        } else {
            items.push(scalar(rest, number, depth)?);
            *at += 1;
        }
    }
    Ok(Value::Array(items))
}

fn mapping(
    lines: &mut [Line],
    at: &mut usize,
    indent: usize,
    depth: usize,
) -> Result<Value, String> {
    too_deep(depth, lines.get(*at).map_or(0, |l| l.number))?;
    let depth = depth + 1;
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
                    block(lines, at, deeper, depth)?
                }
                // A sequence may sit at the key's own indentation.
                Some(next) if next.indent == indent && next.text.starts_with('-') => {
                    sequence(lines, at, indent, depth)?
                }
                _ => Value::Null,
            }
        } else {
            scalar(&rest, number, depth)?
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

/// One value on one line, `depth` levels down.
fn scalar(text: &str, number: usize, depth: usize) -> Result<Value, String> {
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
        too_deep(depth, number)?;
        let inner = inner.strip_suffix(']').ok_or(format!(
            "line {number}: a list that does not end on its line"
        ))?;
        return inner
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| scalar(item, number, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if text.starts_with('{') {
        // serde_json stops at its own depth limit (128) with an error.
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

    #[test]
    fn nesting_is_limited_by_indentation_by_flow_lists_and_in_flow_style() {
        let nested = |levels: usize| {
            (0..levels)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>()
        };
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        let err = parse(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err, "line 129: nested deeper than 128 levels");
        let lists = format!(
            "apps:\n  - {}{}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        assert_eq!(
            parse(&lists).unwrap_err(),
            "line 2: nested deeper than 128 levels"
        );
        let flow = format!("# flow\n{}", "[".repeat(1_000_000));
        assert!(parse(&flow)
            .unwrap_err()
            .starts_with("line 2, column 129: nested deeper"));
    }
}
