//! Percent-encoding of path segments and query values (RFC 3986), and its inverse.

/// `text` with every byte outside the unreserved set (`A-Z a-z 0-9 - . _ ~`) written as
/// `%XX`: safe as one path segment or as one query value (a `/` in a branch name becomes
/// `%2F`).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` with `%XX` sequences decoded; a malformed sequence or invalid UTF-8 is kept as is.
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_and_unicode_are_escaped_and_unreserved_kept() {
        assert_eq!(encode("refs/heads/a b"), "refs%2Fheads%2Fa%20b");
        assert_eq!(encode("acme:promo-1.2_x~"), "acme%3Apromo-1.2_x~");
        assert_eq!(encode("é&="), "%C3%A9%26%3D");
    }

    #[test]
    fn decoding_reverses_encoding_and_keeps_malformed_escapes() {
        assert_eq!(decode(&encode("My Project/é")), "My Project/é");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
