//! Reading one line of YAML without a YAML library: where its comment starts, whether that
//! comment is a promotion marker, and which bytes hold the scalar the marker points at.
//!
//! Positions are byte offsets into the line's content (the line without its `\n` or `\r\n`).
//! Every delimiter looked for is ASCII, so every offset is a `char` boundary.

use std::ops::Range;

use super::Problem;

/// How a scalar is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    Plain,
    Single,
    Double,
}

/// The scalar a marker points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    /// Bytes of the scalar, quotes included.
    pub range: Range<usize>,
    pub style: Style,
    /// No key, no `- ` and no `---` before the scalar: the line holds nothing but the scalar,
    /// so it may be the value of the key above it, or the continuation of a multi-line scalar.
    pub bare: bool,
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `b[i]` is followed by whitespace or by the end.
fn ends_token(b: &[u8], i: usize, end: usize) -> bool {
    i + 1 >= end || is_ws(b[i + 1])
}

fn skip_ws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && is_ws(b[i]) {
        i += 1;
    }
    i
}

fn trim_end(b: &[u8], from: usize, mut end: usize) -> usize {
    while end > from && is_ws(b[end - 1]) {
        end -= 1;
    }
    end
}

/// End (exclusive) of a double-quoted scalar opening at `i`, if it closes before `end`.
fn double_quoted_end(b: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < end {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// End (exclusive) of a single-quoted scalar opening at `i`, if it closes before `end`.
fn single_quoted_end(b: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < end {
        if b[j] == b'\'' {
            if j + 1 < end && b[j + 1] == b'\'' {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// Where the line's comment starts (the offset of its `#`), scanning from `from`.
///
/// A `#` starts a comment only at the start of the line or after whitespace, and never inside
/// a quoted scalar. A quote opens a quoted scalar only where a YAML node can start (start of
/// the line, after `- `, `: `, a property, or `[`, `{`, `,` in a flow collection): the
/// apostrophe in `note: it's late # ...` is plain text. A quoted scalar that does not close on
/// this line hides the rest of the line, so no comment is found there.
pub(super) fn comment_start(content: &str, from: usize) -> Option<usize> {
    let b = content.as_bytes();
    let end = b.len();
    let mut i = from;
    let mut after_ws = true;
    let mut node_start = true;
    let mut flow_depth = 0usize;
    while i < end {
        let c = b[i];
        if is_ws(c) {
            after_ws = true;
            i += 1;
            continue;
        }
        if c == b'#' && after_ws {
            return Some(i);
        }
        after_ws = false;
        if node_start {
            match c {
                b'"' | b'\'' => {
                    let close = if c == b'"' {
                        double_quoted_end(b, i, end)
                    } else {
                        single_quoted_end(b, i, end)
                    };
                    i = close?;
                    node_start = false;
                    continue;
                }
                b'-' | b'?' | b':' if ends_token(b, i, end) => {}
                b'[' | b'{' => flow_depth += 1,
                b'&' | b'!' => {
                    while i < end && !is_ws(b[i]) {
                        i += 1;
                    }
                    continue;
                }
                _ => node_start = false,
            }
            i += 1;
            continue;
        }
        match c {
            b':' if ends_token(b, i, end) => node_start = true,
            b':' if flow_depth > 0 => node_start = matches!(b[i + 1], b'"' | b'\'' | b'[' | b'{'),
            b',' | b'[' | b'{' if flow_depth > 0 => {
                if c != b',' {
                    flow_depth += 1;
                }
                node_start = true;
            }
            b']' | b'}' if flow_depth > 0 => flow_depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The `$promotion` string of a comment (the text after its `#`), if the comment is a JSON
/// object with a `$promotion` string member. Anything else is an ordinary comment.
pub(super) fn promotion_of(comment: &str) -> Option<String> {
    let comment = comment.trim();
    if !comment.starts_with('{') || !comment.contains("$promotion") {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(comment).ok()?;
    match object.get("$promotion")? {
        serde_json::Value::String(target) => Some(target.clone()),
        _ => None,
    }
}

/// Skips anchors (`&name`) and tags (`!tag`, `!!str`) before a node.
fn skip_properties(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && (b[i] == b'&' || b[i] == b'!') {
        while i < end && !is_ws(b[i]) {
            i += 1;
        }
        i = skip_ws(b, i, end);
    }
    i
}

/// A scalar token starting at `i`: its end, its style, and for a plain token whether it
/// stopped at a mapping indicator (`: ` or a final `:`), i.e. it is a key.
fn scalar_at(b: &[u8], i: usize, end: usize) -> Result<(usize, Style, bool), Problem> {
    match b[i] {
        b'"' => double_quoted_end(b, i, end)
            .map(|e| (e, Style::Double, false))
            .ok_or(Problem::QuotedContinues),
        b'\'' => single_quoted_end(b, i, end)
            .map(|e| (e, Style::Single, false))
            .ok_or(Problem::QuotedContinues),
        b'|' | b'>' => Err(Problem::BlockScalar),
        b'[' | b'{' => Err(Problem::FlowCollection),
        b'*' => Err(Problem::Alias),
        b'-' | b'?' | b':' if ends_token(b, i, end) => Err(Problem::Indicator(b[i] as char)),
        c @ (b'@' | b'`' | b'%' | b',' | b']' | b'}') => Err(Problem::Indicator(c as char)),
        _ => {
            let mut j = i;
            while j < end {
                if b[j] == b':' && ends_token(b, j, end) {
                    return Ok((trim_end(b, i, j), Style::Plain, true));
                }
                j += 1;
            }
            Ok((end, Style::Plain, false))
        }
    }
}

/// Finds the scalar whose value a marker comment at `comment_at` sets: the value of
/// `key: value`, of `- value`, of `- key: value`, or a scalar alone on its line.
pub(super) fn locate_scalar(
    content: &str,
    from: usize,
    comment_at: usize,
) -> Result<Located, Problem> {
    let b = content.as_bytes();
    let end = trim_end(b, from, comment_at);
    let mut i = skip_ws(b, from, end);
    if i == end {
        return Err(Problem::MarkerAlone);
    }
    let mut structured = false;
    if i == from && b[i..end].starts_with(b"---") && ends_token(b, i + 2, end) {
        i = skip_ws(b, i + 3, end);
        structured = true;
    }
    while i < end && b[i] == b'-' && ends_token(b, i, end) {
        i = skip_ws(b, i + 1, end);
        structured = true;
    }
    i = skip_properties(b, i, end);
    if i == end {
        return Err(Problem::NoValue);
    }
    let (token_end, style, plain_key) = scalar_at(b, i, end)?;
    let is_key = match style {
        Style::Plain => plain_key,
        Style::Single | Style::Double => {
            let k = skip_ws(b, token_end, end);
            if k == end {
                false
            } else if b[k] == b':' && ends_token(b, k, end) {
                true
            } else {
                return Err(Problem::TextAfterQuoted);
            }
        }
    };
    if !is_key {
        return Ok(Located {
            range: i..token_end,
            style,
            bare: !structured,
        });
    }
    // The value after the key.
    let colon = b[token_end..end]
        .iter()
        .position(|&c| c == b':')
        .map_or(end, |p| token_end + p);
    let mut v = skip_ws(b, colon + 1, end);
    v = skip_properties(b, v, end);
    if v == end {
        return Err(Problem::NoValue);
    }
    let (value_end, style, plain_key) = scalar_at(b, v, end)?;
    if plain_key {
        return Err(Problem::MappingInValue);
    }
    if value_end != end {
        let k = skip_ws(b, value_end, end);
        return Err(if b[k] == b':' {
            Problem::MappingInValue
        } else {
            Problem::TextAfterQuoted
        });
    }
    Ok(Located {
        range: v..value_end,
        style,
        bare: false,
    })
}

/// The line holds YAML content: not blank and not only a comment.
pub(super) fn is_significant(content: &str, from: usize, comment_at: Option<usize>) -> bool {
    let b = content.as_bytes();
    let end = comment_at.unwrap_or(b.len());
    skip_ws(b, from, end) < end
}

/// The line leaves a node open for the next line's content: `key:`, `-`, or one of them
/// followed by nothing but an anchor or a tag; or it starts a document (`---` unindented).
pub(super) fn opens_value(content: &str, from: usize, comment_at: Option<usize>) -> bool {
    let b = content.as_bytes();
    let end = trim_end(b, from, comment_at.unwrap_or(b.len()));
    if &b[from..end] == b"---" {
        return true;
    }
    let mut i = skip_ws(b, from, end);
    while i < end && b[i] == b'-' && ends_token(b, i, end) {
        i = skip_ws(b, i + 1, end);
    }
    let mut rest = &content[i..end];
    loop {
        if rest.is_empty() || rest.ends_with(':') {
            return true;
        }
        let last_start = rest.rfind([' ', '\t']).map_or(0, |p| p + 1);
        let last = &rest[last_start..];
        if !(last.starts_with('&') || last.starts_with('!')) {
            return false;
        }
        rest = rest[..last_start].trim_end_matches([' ', '\t']);
    }
}
