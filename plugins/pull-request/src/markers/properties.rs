//! Property tests: whatever the file and the version, the edit touches only the lines marked
//! for the target, and what it writes reads back as the version.

use proptest::prelude::*;
use serde_yaml_ng::Value;

use super::*;

fn target() -> MarkerTarget {
    MarkerTarget::new("apps", "billing", "test").on_cluster("eu")
}

/// A marker comment for the target, for other targets, or malformed, in various spellings.
fn marker_comment() -> impl Strategy<Value = String> {
    let named = prop_oneof![
        Just("apps:billing:test"),
        Just("apps:billing:test:eu"),
        Just("apps:billing:test:us"),
        Just("apps:billing:prod"),
        Just("apps:other:test"),
        Just("apps:billing"),
    ];
    (
        named,
        prop_oneof![Just("# "), Just("#"), Just("#   ")],
        prop_oneof![Just(": "), Just(":")],
    )
        .prop_map(|(named, hash, colon)| format!("{hash}{{\"$promotion\"{colon}\"{named}\"}}"))
}

fn double_quoted(text: String) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn single_quoted(text: String) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A scalar as it may stand in a file: plain, double- or single-quoted.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9.:/@ -]{0,10}",
        "[ -~]{0,8}".prop_map(double_quoted),
        "[ -~]{0,8}".prop_map(single_quoted),
    ]
}

/// One line of YAML-ish text without its terminator.
fn yaml_line() -> impl Strategy<Value = String> {
    let body = prop_oneof![
        scalar().prop_map(|s| format!("key: {s}")),
        scalar().prop_map(|s| format!("- {s}")),
        scalar().prop_map(|s| format!("- name: {s}")),
        scalar(),
        Just("key:".to_owned()),
        Just("script: |".to_owned()),
        Just("flow: {a: b}".to_owned()),
        Just("---".to_owned()),
        Just(String::new()),
        "[ -~]{0,20}",
    ];
    let comment = prop_oneof![
        2 => Just(String::new()),
        1 => Just("# a comment".to_owned()),
        3 => marker_comment(),
    ];
    ("[ \t]{0,4}", body, "[ ]{1,3}", comment, "[ ]{0,2}").prop_map(
        |(indent, body, gap, comment, trailing)| {
            if comment.is_empty() {
                format!("{indent}{body}{trailing}")
            } else {
                format!("{indent}{body}{gap}{comment}{trailing}")
            }
        },
    )
}

/// A file of such lines, with `\n` or `\r\n` endings, maybe a byte-order mark, maybe no
/// final newline.
fn yaml_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((yaml_line(), prop_oneof![Just("\n"), Just("\r\n")]), 0..12),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, bom, final_newline)| {
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            let count = lines.len();
            for (i, (line, ending)) in lines.into_iter().enumerate() {
                text.push_str(&line);
                if i + 1 < count || final_newline {
                    text.push_str(ending);
                }
            }
            text
        })
}

/// Versions from the usual to the hostile.
fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,2}(\\.[0-9]{1,2}){0,2}",
        "v[0-9a-z.+-]{1,8}",
        "(true|no|null|~|1e3|0x1f|1:30|2024-01-15)",
        "[ -~]{1,10}",
        "[\\x00-\\x7f]{1,6}",
        "\\PC{1,6}",
    ]
}

fn marked_lines(text: &str) -> Vec<usize> {
    markers(text)
        .into_iter()
        .filter(|m| m.applies_to(&target()))
        .map(|m| m.line)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn file_without_markers_is_byte_identical_after_apply(
        text in prop_oneof![
            any::<String>(),
            yaml_file().prop_map(|t| t.replace("$promotion", "$promoted")),
        ],
        version in version(),
    ) {
        let text = text.replace("$promotion", "");
        let edit = apply(&text, &target(), &version).unwrap();
        prop_assert_eq!(&edit.text, &text);
        prop_assert_eq!((edit.changed, edit.matched), (0, 0));
    }

    #[test]
    fn only_lines_marked_for_the_target_change(text in yaml_file(), version in version()) {
        let marked = marked_lines(&text);
        match apply(&text, &target(), &version) {
            Ok(edit) => {
                let before: Vec<&str> = text.split_inclusive('\n').collect();
                let after: Vec<&str> = edit.text.split_inclusive('\n').collect();
                prop_assert_eq!(before.len(), after.len());
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    if !marked.contains(&(i + 1)) {
                        prop_assert_eq!(b, a, "line {}", i + 1);
                    }
                }
                prop_assert_eq!(edit.matched, marked.len());
                // Markers are neither created nor destroyed by the edit.
                prop_assert_eq!(markers(&edit.text), markers(&text));
                // A second application finds everything already at the version.
                let again = apply(&edit.text, &target(), &version).unwrap();
                prop_assert_eq!(&again.text, &edit.text);
                prop_assert_eq!((again.changed, again.matched), (0, edit.matched));
            }
            Err(MarkerError::Unusable(problems)) => {
                for problem in problems {
                    prop_assert!(
                        problem.marker.split(':').take(2).eq(["apps", "billing"]),
                        "problem reported for another pipeline's marker: {problem}"
                    );
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn marked_values_read_back_as_the_version_in_a_yaml_parser(
        entries in prop::collection::vec(
            (
                prop_oneof![
                    "v[a-z0-9.]{0,6}",
                    "[ -~]{0,8}".prop_map(double_quoted),
                    "[ -~]{0,8}".prop_map(single_quoted),
                ],
                prop_oneof![
                    Just(""),
                    Just(" # {\"$promotion\": \"apps:billing:test\"}"),
                    Just(" #{\"$promotion\":\"apps:billing:test:eu\"}"),
                    Just(" # {\"$promotion\": \"apps:billing:prod\"}"),
                ],
            ),
            1..8,
        ),
        version in version(),
    ) {
        let text: String = entries
            .iter()
            .enumerate()
            .map(|(i, (value, comment))| format!("k{i}: {value}{comment}\n"))
            .collect();
        let edit = apply(&text, &target(), &version).unwrap();
        let before: Value = serde_yaml_ng::from_str(&text).unwrap();
        let after: Value = serde_yaml_ng::from_str(&edit.text)
            .unwrap_or_else(|e| panic!("edited file is not YAML ({e}):\n{}", edit.text));
        for (i, (_, comment)) in entries.iter().enumerate() {
            let key = format!("k{i}");
            let expected = if comment.contains("apps:billing:test") {
                Value::String(version.clone())
            } else {
                before[key.as_str()].clone()
            };
            prop_assert_eq!(&after[key.as_str()], &expected, "key {} in\n{}", key, edit.text);
        }
    }
}
