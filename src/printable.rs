//! Making text that an instance (or any other outsider) can influence safe to show on a
//! terminal: control characters become visible escapes, so a `STATUS=` line or a worker
//! message cannot move the cursor, ring the bell, rewrite earlier lines or set the title.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL and C1) written as an escape: ESC becomes
/// `\x1b`, a CSI (U+009B) becomes `\u{9b}`. Everything else, including non-ASCII text, is
/// kept as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` as [`printable`] makes it, but its line breaks kept: for clusterd's own multi-line
/// answers (`daemon-reload` lists what failed, one unit a line), where `\n` on one line would
/// hide the list. Every line is escaped on its own, so nothing in it can drive the terminal;
/// a `\r` is still shown as `\r` (it could rewrite the line it is on).
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && c.is_control()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(printable)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// JSON text with DEL and the C1 controls written as `\u` escapes too (serde_json escapes
/// only C0): the same JSON value, safe to print on a terminal. They can only occur inside
/// strings, where the escape means the same character.
pub fn json_for_terminal(json: String) -> String {
    // In UTF-8, DEL is 0x7f and every C1 control is 0xc2 then 0x80..=0x9f: a byte scan finds
    // them, and the text (250 KB with 1000 instances) is kept as it is when there are none.
    let bytes = json.as_bytes();
    let clean = memchr::memchr(0x7f, bytes).is_none()
        && !memchr::memchr_iter(0xc2, bytes)
            .any(|at| bytes.get(at + 1).is_some_and(|b| (0x80..=0x9f).contains(b)));
    if clean {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 64);
    for c in json.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_its_value_and_loses_its_c1_controls() {
        let value = serde_json::json!({ "status_text": "\u{1b}[2J\u{9b}5m\u{7f}ok é" });
        let text = json_for_terminal(serde_json::to_string(&value).unwrap());
        assert!(!text.chars().any(char::is_control), "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            value
        );
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(printable("warming up: 50 % — ok"), "warming up: 50 % — ok");
        assert_eq!(
            printable("\x1b]0;pwned\x07\r\nx\u{9b}2J\x7f"),
            "\\x1b]0;pwned\\x07\\r\\nx\\u{9b}2J\\x7f"
        );
    }

    #[test]
    fn printable_lines_keeps_the_line_breaks_and_escapes_the_rest() {
        assert_eq!(
            printable_lines("1 unchanged\nweb: no"),
            "1 unchanged\nweb: no"
        );
        assert_eq!(
            printable_lines("a\x1b[2J\r\nb\u{9b}"),
            "a\\x1b[2J\\r\nb\\u{9b}"
        );
    }
}
