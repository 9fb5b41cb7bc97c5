//! JSON5 (<https://spec.json5.org>) read into JSON values, for `clusterctl import`: PM2's
//! `.json` and `.json5` ecosystem files use it (unquoted keys, comments, single quotes,
//! trailing commas). A data file is parsed here and never handed to node, so a `.json` file
//! that holds JavaScript is an error at its line, not code that runs. Nesting is limited to
//! [`MAX_DEPTH`] levels: the parser recurses, and a hostile file must not exhaust the stack.

use serde_json::{Map, Number, Value};

/// How deep arrays and objects may nest: serde_json's own default limit, far beyond any
/// ecosystem file (PM2's go four levels deep).
pub const MAX_DEPTH: usize = 128;

/// The value of a whole JSON5 text; an error says "line L, column C: what".
pub fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_space()?;
    if parser.pos < text.len() {
        return Err(parser.error(parser.pos, "more text after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

/// JSON5's white space: ECMAScript's, which is wider than JSON's.
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

fn is_line_end(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

fn starts_identifier(c: char) -> bool {
    c == '$' || c == '_' || c == '\\' || c.is_alphabetic()
}

fn continues_identifier(c: char) -> bool {
    starts_identifier(c) || c.is_alphanumeric() || matches!(c, '\u{200c}' | '\u{200d}')
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    /// `what`, at the line and column of byte offset `at`.
    fn error(&self, at: usize, what: &str) -> String {
        let before = self.text.get(..at).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        format!("line {line}, column {column}: {what}")
    }

    /// Skips white space and comments.
    fn skip_space(&mut self) -> Result<(), String> {
        loop {
            let rest = self.rest();
            if rest.starts_with("//") {
                let end = rest.find(is_line_end).unwrap_or(rest.len());
                self.pos += end;
            } else if rest.starts_with("/*") {
                let Some(end) = rest.find("*/") else {
                    return Err(self.error(self.pos, "a /* comment that is not closed"));
                };
                self.pos += end + 2;
            } else if self.peek().is_some_and(is_space) {
                self.bump();
            } else {
                return Ok(());
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.skip_space()?;
        let start = self.pos;
        match self.peek() {
            None => Err(self.error(start, "the text ends where a value should be")),
            Some(c @ ('{' | '[')) => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.error(start, &format!("nested deeper than {MAX_DEPTH} levels"))
                    );
                }
                self.bump();
                if c == '{' {
                    self.object(depth + 1)
                } else {
                    self.array(depth + 1)
                }
            }
            Some(q @ ('"' | '\'')) => {
                self.bump();
                self.string(q).map(Value::String)
            }
            Some('0'..='9' | '-' | '+' | '.') => self.number(),
            Some(c) if starts_identifier(c) => {
                let word = self.identifier()?;
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    "Infinity" | "NaN" => {
                        Err(self.error(start, &format!("{word} has no JSON value")))
                    }
                    _ => Err(self.error(
                        start,
                        &format!(
                            "`{word}` is not a value: a data file holds no variables or code \
                             (JavaScript belongs in a .js file)"
                        ),
                    )),
                }
            }
            Some(c) => Err(self.error(start, &format!("unexpected {c:?} where a value should be"))),
        }
    }

    /// After the `{`.
    fn object(&mut self, depth: usize) -> Result<Value, String> {
        let mut map = Map::new();
        loop {
            self.skip_space()?;
            let start = self.pos;
            let key = match self.peek() {
                Some('}') => {
                    self.bump();
                    return Ok(Value::Object(map));
                }
                Some(q @ ('"' | '\'')) => {
                    self.bump();
                    self.string(q)?
                }
                Some(c) if starts_identifier(c) => self.identifier()?,
                Some(c) => {
                    return Err(
                        self.error(start, &format!("unexpected {c:?} where a key should be"))
                    )
                }
                None => return Err(self.error(start, "the text ends inside an object")),
            };
            self.skip_space()?;
            if self.bump() != Some(':') {
                return Err(self.error(start, &format!("expected ':' after the key {key:?}")));
            }
            let value = self.value(depth)?;
            // As in JavaScript, a later key wins.
            map.insert(key, value);
            self.skip_space()?;
            let at = self.pos;
            match self.bump() {
                Some(',') => {}
                Some('}') => return Ok(Value::Object(map)),
                _ => return Err(self.error(at, "expected ',' or '}'")),
            }
        }
    }

    /// After the `[`.
    fn array(&mut self, depth: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some(']') {
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth)?);
            self.skip_space()?;
            let at = self.pos;
            match self.bump() {
                Some(',') => {}
                Some(']') => return Ok(Value::Array(items)),
                _ => return Err(self.error(at, "expected ',' or ']'")),
            }
        }
    }

    /// An identifier (a key or a literal), with its `\uXXXX` escapes.
    fn identifier(&mut self) -> Result<String, String> {
        let mut word = String::new();
        while let Some(c) = self.peek() {
            if !continues_identifier(c) {
                break;
            }
            let at = self.pos;
            self.bump();
            if c == '\\' {
                if self.bump() != Some('u') {
                    return Err(self.error(at, "only \\u escapes may appear in a key"));
                }
                let code = self.hex(4, at)?;
                match char::from_u32(code).filter(|&c| continues_identifier(c) && c != '\\') {
                    Some(c) => word.push(c),
                    None => return Err(self.error(at, "an escape that is no letter of a key")),
                }
            } else {
                word.push(c);
            }
        }
        Ok(word)
    }

    /// `digits` hexadecimal digits as a number (`at`: where the escape began, for errors).
    fn hex(&mut self, digits: usize, at: usize) -> Result<u32, String> {
        let text = self.rest().get(..digits).unwrap_or_default();
        if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error(at, &format!("an escape needs {digits} hexadecimal digits")));
        }
        let code = u32::from_str_radix(text, 16);
        self.pos += digits;
        code.map_err(|_| self.error(at, "a bad escape"))
    }

    /// After the opening quote `quote`.
    fn string(&mut self, quote: char) -> Result<String, String> {
        let start = self.pos.saturating_sub(1);
        let mut out = String::new();
        loop {
            let at = self.pos;
            let Some(c) = self.bump() else {
                return Err(self.error(start, "a string that is not closed"));
            };
            match c {
                c if c == quote => return Ok(out),
                '\n' | '\r' => {
                    return Err(self.error(at, "a line break inside a string (write it as \\n)"))
                }
                '\\' => self.escape(at, &mut out)?,
                c => out.push(c),
            }
        }
    }

    /// After a backslash at `at` in a string.
    fn escape(&mut self, at: usize, out: &mut String) -> Result<(), String> {
        let Some(c) = self.bump() else {
            return Err(self.error(at, "a string that is not closed"));
        };
        match c {
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '0' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => out.push('\0'),
            '0'..='9' => return Err(self.error(at, "no octal escapes in JSON5")),
            'x' => {
                let code = self.hex(2, at)?;
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            'u' => {
                let code = self.hex(4, at)?;
                let code = if (0xd800..0xdc00).contains(&code) && self.rest().starts_with("\\u") {
                    // A surrogate pair, as JavaScript writes a character past U+FFFF.
                    let saved = self.pos;
                    self.pos += 2;
                    let low = self.hex(4, at)?;
                    if (0xdc00..0xe000).contains(&low) {
                        0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                    } else {
                        self.pos = saved;
                        code
                    }
                } else {
                    code
                };
                // A lone surrogate has no place in a Rust string.
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            // A line continuation.
            '\r' => {
                if self.peek() == Some('\n') {
                    self.bump();
                }
            }
            '\n' | '\u{2028}' | '\u{2029}' => {}
            c => out.push(c),
        }
        Ok(())
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        let negative = match self.peek() {
            Some('-') => {
                self.bump();
                true
            }
            Some('+') => {
                self.bump();
                false
            }
            _ => false,
        };
        let body = self.pos;
        let rest = self.rest();
        if rest.starts_with("Infinity") || rest.starts_with("NaN") {
            return Err(self.error(start, "Infinity and NaN have no JSON value"));
        }
        if rest.starts_with("0x") || rest.starts_with("0X") {
            self.pos += 2;
            let digits = self.take_while(|c| c.is_ascii_hexdigit());
            let magnitude = u64::from_str_radix(digits, 16).map_err(|_| {
                self.error(start, "a hexadecimal number that is empty or too large")
            })?;
            return Ok(signed(negative, magnitude, magnitude as f64));
        }
        let int = self.take_while(|c| c.is_ascii_digit()).len();
        if int > 1 && self.text.get(body..=body) == Some("0") {
            return Err(self.error(start, "a number with a leading zero"));
        }
        let mut fraction = 0;
        if self.peek() == Some('.') {
            self.bump();
            fraction = self.take_while(|c| c.is_ascii_digit()).len();
        }
        if int == 0 && fraction == 0 {
            return Err(self.error(start, "a number without digits"));
        }
        let mut exponent = false;
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.error(start, "an exponent without digits"));
            }
            exponent = true;
        }
        let text = self.text.get(body..self.pos).unwrap_or_default();
        let float = text
            .parse::<f64>()
            .map_err(|_| self.error(start, "a number that cannot be read"))?;
        if !exponent && !text.contains('.') {
            if let Ok(magnitude) = text.parse::<u64>() {
                return Ok(signed(negative, magnitude, float));
            }
        }
        let float = if negative { -float } else { float };
        Number::from_f64(float)
            .map(Value::Number)
            .ok_or_else(|| self.error(start, "a number too large for JSON"))
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        self.text.get(start..self.pos).unwrap_or_default()
    }
}

/// An integer with its sign, as an integer when it fits, else as a float.
fn signed(negative: bool, magnitude: u64, float: f64) -> Value {
    if !negative {
        return Value::from(magnitude);
    }
    match i64::try_from(magnitude) {
        Ok(m) => Value::from(-m),
        Err(_) => Number::from_f64(-float).map_or(Value::Null, Value::Number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json5_as_pm2s_files_write_it_reads_as_its_json() {
        let text = "// PM2\n{\n  apps: [{ name: 'api', script: \"a.js\", instances: +2, port: 0x1F,\n    ratio: .5, big: 18446744073709551615, neg: -3, exp: 1e3, /* c */ $k_1: 'it\\'s',\n    'quoted key': 'a\\\n b', u: '\\u00e9\\uD83D\\uDE00\\x41\\0',\n  },],\n}\n";
        assert_eq!(
            parse(text).expect("parses"),
            json!({"apps": [{"name": "api", "script": "a.js", "instances": 2, "port": 31,
                "ratio": 0.5, "big": 18446744073709551615u64, "neg": -3, "exp": 1000.0,
                "$k_1": "it's", "quoted key": "a b", "u": "é😀A\0"}]})
        );
        assert_eq!(parse("[1.]").expect("1."), json!([1.0]));
        assert_eq!(parse("\u{feff}{}").expect("BOM"), json!({}));
    }

    #[test]
    fn code_and_broken_text_are_errors_at_their_line() {
        let js = "{\n  apps: [{ name: require('fs').readFileSync('/etc/shadow') }]\n}";
        let err = parse(js).unwrap_err();
        assert!(err.starts_with("line 2, column 18:"), "{err}");
        assert!(err.contains("`require` is not a value"), "{err}");
        for (text, what) in [
            ("{a: 1 b: 2}", "expected ','"),
            ("'abc", "not closed"),
            ("'a\nb'", "line break"),
            ("{a: 1} x", "more text"),
            ("/* x", "not closed"),
            ("[NaN]", "no JSON value"),
            ("[-Infinity]", "no JSON value"),
            ("[01]", "leading zero"),
            ("['\\1']", "octal"),
            ("", "ends where a value"),
            ("{a: (1)}", "unexpected '('"),
            ("[1e]", "exponent"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn nesting_is_limited_and_a_million_levels_are_an_error_not_a_crash() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep)
            .unwrap_err()
            .contains("nested deeper than 128 levels"));
        let million = format!("{{a:{}", "{a:".repeat(1_000_000));
        let err = parse(&million).unwrap_err();
        assert!(err.starts_with("line 1, column 385:"), "{err}");
        // serde_json, which reads node's output, has the same limit (its default; the
        // `unbounded_depth` feature would lift it).
        let err = serde_json::from_str::<Value>(&"[".repeat(1_000_000)).unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
    }
}
