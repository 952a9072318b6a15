//! Reading a scalar's current string and writing the version in its place.
//!
//! # How the version is written
//!
//! The edit keeps the scalar's style when that style can say the version exactly:
//!
//! - **double-quoted** stays double-quoted: `\` and `"` are backslash-escaped, tab, control
//!   and line-break characters are written as escapes (`\t`, `\n`, `\x7f`, `\u2028`, ...);
//! - **single-quoted** stays single-quoted, a `'` doubled to `''`; a version holding a
//!   character that single quotes cannot carry on one line (a control or line-break
//!   character) is written double-quoted instead;
//! - **plain** stays plain only for a "safe plain" version: it starts with an ASCII letter
//!   or digit, holds only `A-Z a-z 0-9 . _ + / @ : ~ -`, does not end with `:`, and a YAML
//!   parser would not read it as something other than a string. Anything else is written
//!   double-quoted, so the file keeps saying the same string.
//!
//! "Something other than a string" is decided by both YAML 1.1 (Go's `yaml.v2`, which Flux
//! and Helm tools still meet) and YAML 1.2: `1.0`, `2`, `1e3`, `0x1F`, `1_000`, `1:30`
//! (1.1 sexagesimal), `true`, `yes`, `on`, `null` and dates such as `2024-01-15`. Written
//! plain, `version: 1.10` would be the float 1.1 — a chart version Helm then looks up as
//! `1.1`. Quoting such a version (`"1.10"`) keeps it a string. The test errs on the side of
//! quoting: a needless pair of quotes is harmless, a missing one changes the value.

use super::line::Style;

/// The string a scalar's source says, or `None` for a double-quoted scalar with an escape
/// this reader does not know (it is then simply rewritten).
pub(super) fn decode(source: &str, style: Style) -> Option<String> {
    match style {
        Style::Plain => Some(source.to_owned()),
        Style::Single => Some(source[1..source.len() - 1].replace("''", "'")),
        Style::Double => decode_double(&source[1..source.len() - 1]),
    }
}

fn decode_double(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = match chars.next()? {
            '0' => '\0',
            'a' => '\u{7}',
            'b' => '\u{8}',
            't' | '\t' => '\t',
            'n' => '\n',
            'v' => '\u{b}',
            'f' => '\u{c}',
            'r' => '\r',
            'e' => '\u{1b}',
            ' ' => ' ',
            '"' => '"',
            '/' => '/',
            '\\' => '\\',
            'N' => '\u{85}',
            '_' => '\u{a0}',
            'L' => '\u{2028}',
            'P' => '\u{2029}',
            'x' => hex(&mut chars, 2)?,
            'u' => hex(&mut chars, 4)?,
            'U' => hex(&mut chars, 8)?,
            _ => return None,
        };
        out.push(escaped);
    }
    Some(out)
}

fn hex(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<char> {
    let text: String = chars.take(digits).collect();
    if text.len() != digits {
        return None;
    }
    char::from_u32(u32::from_str_radix(&text, 16).ok()?)
}

/// The source text that replaces a scalar of style `original` so that it says `version`.
pub(super) fn render(version: &str, original: Style) -> String {
    match original {
        Style::Plain if is_safe_plain(version) => version.to_owned(),
        Style::Single if version.chars().all(single_quotable) => {
            format!("'{}'", version.replace('\'', "''"))
        }
        _ => double_quoted(version),
    }
}

/// Characters a single-quoted scalar carries on one line as they are.
fn single_quotable(c: char) -> bool {
    !needs_escape(c)
}

/// Characters a quoted scalar must spell as an escape: C0 and C1 controls other than tab,
/// DEL, YAML's line breaks, the non-characters YAML does not print, and the invisible
/// byte-order mark.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn double_quoted(version: &str) -> String {
    let mut out = String::with_capacity(version.len() + 2);
    out.push('"');
    for c in version.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) <= 0xff => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The version can be written as a plain scalar and still be read back as the same string.
pub(super) fn is_safe_plain(version: &str) -> bool {
    let mut chars = version.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || "._+/@:~-".contains(c))
        && !version.ends_with(':')
        && !reads_as_non_string(version)
}

/// A YAML 1.1 or 1.2 parser could resolve this plain scalar to a null, a boolean, a number
/// or a timestamp. Only called on text made of the safe-plain characters.
fn reads_as_non_string(text: &str) -> bool {
    const WORDS: [&str; 9] = ["true", "false", "yes", "no", "on", "off", "y", "n", "null"];
    let lower = text.to_ascii_lowercase();
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    let digits: String = lower.chars().filter(|&c| c != '_').collect();
    if digits.parse::<f64>().is_ok() {
        return true;
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = digits.strip_prefix(prefix)
            && !rest.is_empty()
            && rest.chars().all(|c| c.is_digit(radix))
        {
            return true;
        }
    }
    // YAML 1.1 sexagesimal numbers (`1:30`, `190:20:30.15`).
    if text.contains(':')
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || "_:.".contains(c))
    {
        return true;
    }
    // YAML 1.1 timestamps (`2024-01-15`, `2024-1-5t10:00:00z`).
    let b = text.as_bytes();
    b.len() >= 6 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5].is_ascii_digit()
}
