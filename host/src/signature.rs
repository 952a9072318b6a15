//! HMAC signatures in the form Flux's `generic-hmac` provider sends them:
//! `X-Signature: <algorithm>=<lowercase hex HMAC of the raw body>`.

use hmac::{Hmac, Mac};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha224 => "sha224",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature header is missing")]
    Missing,
    #[error("X-Signature header {0:?} is malformed; expected <sha224|sha256|sha384|sha512>=<hex>")]
    Malformed(String),
    #[error(
        "X-Signature uses unsupported algorithm {0:?}; expected sha224, sha256, sha384 or sha512"
    )]
    UnsupportedAlgorithm(String),
    #[error("X-Signature does not match the body signed with the pipeline's hmac-key")]
    Mismatch,
}

/// `sha256=ab12…` split into its algorithm and raw digest bytes.
pub fn parse_header(header: &str) -> Result<(Algorithm, Vec<u8>), SignatureError> {
    let (algo, hex_digest) = header
        .trim()
        .split_once('=')
        .ok_or_else(|| SignatureError::Malformed(truncate(header)))?;
    let algorithm = match algo.to_ascii_lowercase().as_str() {
        "sha224" => Algorithm::Sha224,
        "sha256" => Algorithm::Sha256,
        "sha384" => Algorithm::Sha384,
        "sha512" => Algorithm::Sha512,
        _ => return Err(SignatureError::UnsupportedAlgorithm(truncate(algo))),
    };
    let digest =
        hex::decode(hex_digest).map_err(|_| SignatureError::Malformed(truncate(header)))?;
    Ok((algorithm, digest))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The HMAC of `data` under `key`, raw bytes.
pub fn mac(algorithm: Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    macro_rules! run {
        ($digest:ty) => {{
            let mut m =
                <Hmac<$digest>>::new_from_slice(key).expect("HMAC accepts keys of any length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }};
    }
    match algorithm {
        Algorithm::Sha224 => run!(sha2::Sha224),
        Algorithm::Sha256 => run!(sha2::Sha256),
        Algorithm::Sha384 => run!(sha2::Sha384),
        Algorithm::Sha512 => run!(sha2::Sha512),
    }
}

/// The HMAC of `data` under `key`, lowercase hex (what goes after `sha256=`).
pub fn sign_hex(algorithm: Algorithm, key: &[u8], data: &[u8]) -> String {
    hex::encode(mac(algorithm, key, data))
}

/// Checks an `X-Signature` header against the raw body, in constant time.
pub fn verify(header: Option<&str>, key: &[u8], body: &[u8]) -> Result<Algorithm, SignatureError> {
    let (algorithm, digest) = parse_header(header.ok_or(SignatureError::Missing)?)?;
    macro_rules! check {
        ($digest:ty) => {{
            let mut m =
                <Hmac<$digest>>::new_from_slice(key).expect("HMAC accepts keys of any length");
            m.update(body);
            // verify_slice compares in constant time.
            m.verify_slice(&digest)
                .map_err(|_| SignatureError::Mismatch)
        }};
    }
    match algorithm {
        Algorithm::Sha224 => check!(sha2::Sha224),
        Algorithm::Sha256 => check!(sha2::Sha256),
        Algorithm::Sha384 => check!(sha2::Sha384),
        Algorithm::Sha512 => check!(sha2::Sha512),
    }?;
    Ok(algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";

    #[test]
    fn signatures_match_the_rfc_4231_vectors() {
        assert_eq!(
            sign_hex(Algorithm::Sha256, KEY, DATA),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign_hex(Algorithm::Sha224, KEY, DATA),
            "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44"
        );
    }

    #[test]
    fn a_correct_header_verifies_and_a_flipped_byte_does_not() {
        for algorithm in [
            Algorithm::Sha224,
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
        ] {
            let header = format!("{algorithm}={}", sign_hex(algorithm, KEY, DATA));
            assert_eq!(verify(Some(&header), KEY, DATA), Ok(algorithm));
            let mut body = DATA.to_vec();
            body[3] ^= 1;
            assert_eq!(
                verify(Some(&header), KEY, &body),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                verify(Some(&header), b"other", DATA),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn malformed_headers_say_what_was_expected() {
        assert_eq!(verify(None, KEY, DATA), Err(SignatureError::Missing));
        assert!(matches!(
            verify(Some("abc"), KEY, DATA),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("sha256=zz"), KEY, DATA),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("md5=00"), KEY, DATA),
            Err(SignatureError::UnsupportedAlgorithm(a)) if a == "md5"
        ));
    }
}
