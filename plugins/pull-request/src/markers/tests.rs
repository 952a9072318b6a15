use super::*;

fn prod() -> MarkerTarget {
    MarkerTarget::new("flux-system", "podinfo", "prod")
}

fn billing_test() -> MarkerTarget {
    MarkerTarget::new("apps", "billing", "test")
}

fn applied(text: &str, target: &MarkerTarget, version: &str) -> Edit {
    apply(text, target, version).unwrap_or_else(|e| panic!("apply failed: {e}"))
}

fn problems(text: &str, target: &MarkerTarget) -> Vec<(usize, Problem)> {
    match apply(text, target, "1.2.3") {
        Err(MarkerError::Unusable(problems)) => {
            problems.into_iter().map(|p| (p.line, p.problem)).collect()
        }
        other => panic!("expected unusable markers, got {other:?}"),
    }
}

#[test]
fn chart_version_marker_sets_the_plain_scalar() {
    let text = "spec:\n  chart:\n    spec:\n      chart: podinfo\n      version: 6.5.4 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
    let edit = applied(text, &prod(), "6.5.5");
    assert_eq!(
        edit.text,
        "spec:\n  chart:\n    spec:\n      chart: podinfo\n      version: 6.5.5 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n"
    );
    assert_eq!((edit.changed, edit.matched), (1, 1));
}

#[test]
fn whole_plain_scalar_is_replaced_by_the_version() {
    let text = "image: ghcr.io/org/app:v1.2.3 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
    let edit = applied(text, &prod(), "v1.3.0");
    assert_eq!(
        edit.text,
        "image: v1.3.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n"
    );
}

#[test]
fn double_quoted_value_with_cluster_marker_keeps_quotes_and_spacing() {
    let text =
        "values:\n  tag: \"1.0.0\"   # {\"$promotion\": \"apps:billing:test:eu-cluster\"}  \n";
    let edit = applied(text, &billing_test().on_cluster("eu-cluster"), "1.1.0");
    assert_eq!(
        edit.text,
        "values:\n  tag: \"1.1.0\"   # {\"$promotion\": \"apps:billing:test:eu-cluster\"}  \n"
    );
    assert_eq!((edit.changed, edit.matched), (1, 1));
}

#[test]
fn single_quoted_value_in_sequence_mapping_with_tight_marker_stays_single_quoted() {
    let text = "images:\n- name: x\n  newTag: '2.0'  #{\"$promotion\":\"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "2.1");
    assert_eq!(
        edit.text,
        "images:\n- name: x\n  newTag: '2.1'  #{\"$promotion\":\"apps:billing:test\"}\n"
    );
}

#[test]
fn sequence_item_scalar_and_sequence_mapping_value_are_set() {
    let text = "tags:\n  - 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\n  - keep\n- version: v1 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "v2.0.0");
    assert_eq!(
        edit.text,
        "tags:\n  - v2.0.0 # {\"$promotion\": \"apps:billing:test\"}\n  - keep\n- version: v2.0.0 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
    assert_eq!((edit.changed, edit.matched), (2, 2));
}

#[test]
fn value_on_the_line_below_its_key_is_set() {
    let text = "version:\n  1.0.0 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "1.0.1");
    assert_eq!(
        edit.text,
        "version:\n  1.0.1 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn anchors_and_tags_before_the_value_are_kept() {
    let text = "a: &tag 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\nb: !!str v1 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "v2");
    assert_eq!(
        edit.text,
        "a: &tag v2 # {\"$promotion\": \"apps:billing:test\"}\nb: !!str v2 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn crlf_line_endings_are_preserved() {
    let text =
        "spec:\r\n  version: 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\r\n  other: x\r\n";
    let edit = applied(text, &billing_test(), "1.0.1");
    assert_eq!(
        edit.text,
        "spec:\r\n  version: 1.0.1 # {\"$promotion\": \"apps:billing:test\"}\r\n  other: x\r\n"
    );
}

#[test]
fn byte_order_mark_and_missing_final_newline_are_preserved() {
    let text = "\u{feff}version: 1.0.0 # {\"$promotion\": \"apps:billing:test\"}";
    let edit = applied(text, &billing_test(), "1.0.1");
    assert_eq!(
        edit.text,
        "\u{feff}version: 1.0.1 # {\"$promotion\": \"apps:billing:test\"}"
    );
}

#[test]
fn file_without_markers_comes_back_identical() {
    let text = "\u{feff}# a comment\r\nkey:   value   \n\tweird: 'it''s' # {\"not\": \"a marker\"}\n- [a, b]\nblock: |\n  text # {\"$promotion\" broken\nno newline at end";
    let edit = applied(text, &prod(), "9.9.9");
    assert_eq!(edit.text, text);
    assert_eq!((edit.changed, edit.matched), (0, 0));
}

#[test]
fn markers_for_other_environments_and_pipelines_are_untouched() {
    let text = "a: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:staging\"}\nb: 1.0.0 # {\"$promotion\": \"flux-system:other:prod\"}\nc: 1.0.0 # {\"$promotion\": \"other-ns:podinfo:prod\"}\nd: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
    let edit = applied(text, &prod(), "2.0.0");
    assert_eq!(
        edit.text,
        "a: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:staging\"}\nb: 1.0.0 # {\"$promotion\": \"flux-system:other:prod\"}\nc: 1.0.0 # {\"$promotion\": \"other-ns:podinfo:prod\"}\nd: 2.0.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n"
    );
    assert_eq!((edit.changed, edit.matched), (1, 1));
}

#[test]
fn cluster_specific_marker_is_set_only_for_that_cluster() {
    let text = "eu: 1.0.0 # {\"$promotion\": \"apps:billing:test:eu\"}\nus: 1.0.0 # {\"$promotion\": \"apps:billing:test:us\"}\nall: 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\n";
    let eu = applied(text, &billing_test().on_cluster("eu"), "2.0.0");
    assert_eq!(
        eu.text,
        "eu: 2.0.0 # {\"$promotion\": \"apps:billing:test:eu\"}\nus: 1.0.0 # {\"$promotion\": \"apps:billing:test:us\"}\nall: 2.0.0 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
    assert_eq!((eu.changed, eu.matched), (2, 2));
    let no_cluster = applied(text, &billing_test(), "2.0.0");
    assert_eq!(
        no_cluster.text,
        "eu: 1.0.0 # {\"$promotion\": \"apps:billing:test:eu\"}\nus: 1.0.0 # {\"$promotion\": \"apps:billing:test:us\"}\nall: 2.0.0 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
    assert_eq!((no_cluster.changed, no_cluster.matched), (1, 1));
}

#[test]
fn single_quote_in_version_is_doubled_inside_single_quotes() {
    let text = "v: 'old' # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "it's 1.0");
    assert_eq!(
        edit.text,
        "v: 'it''s 1.0' # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn quote_and_backslash_in_version_are_escaped_inside_double_quotes() {
    let text = "v: \"old\" # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "a\"b\\c");
    assert_eq!(
        edit.text,
        "v: \"a\\\"b\\\\c\" # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn control_character_in_version_turns_single_quotes_into_double_quotes() {
    let text = "v: 'old' # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "a\nb");
    assert_eq!(
        edit.text,
        "v: \"a\\nb\" # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn version_that_would_not_read_back_as_the_same_plain_string_is_double_quoted() {
    let cases = [
        ("1.10", "\"1.10\""),
        ("2", "\"2\""),
        ("1e3", "\"1e3\""),
        ("0x1F", "\"0x1F\""),
        ("true", "\"true\""),
        ("yes", "\"yes\""),
        ("null", "\"null\""),
        ("1:30", "\"1:30\""),
        ("2024-01-15", "\"2024-01-15\""),
        ("~", "\"~\""),
        ("-1", "\"-1\""),
        ("a: b", "\"a: b\""),
        ("a #b", "\"a #b\""),
        ("end:", "\"end:\""),
        ("*alias", "\"*alias\""),
        (" padded", "\" padded\""),
        ("v1.2.3", "v1.2.3"),
        ("1.2.3", "1.2.3"),
        ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
        ("2024.01.15", "2024.01.15"),
        ("sha256:abc123", "sha256:abc123"),
        ("ghcr.io/org/app@sha256:ab", "ghcr.io/org/app@sha256:ab"),
    ];
    for (version, written) in cases {
        let text = "v: old # {\"$promotion\": \"apps:billing:test\"}\n";
        let edit = applied(text, &billing_test(), version);
        assert_eq!(
            edit.text,
            format!("v: {written} # {{\"$promotion\": \"apps:billing:test\"}}\n"),
            "version {version:?}"
        );
    }
}

#[test]
fn hash_inside_quotes_is_not_a_comment() {
    let text = "a: \"x # y\" # {\"$promotion\": \"apps:billing:test\"}\nb: 'p # {\"$promotion\": \"apps:billing:test\"}'\nc: \"# {\\\"$promotion\\\": \\\"apps:billing:test\\\"}\"\n";
    let edit = applied(text, &billing_test(), "v2");
    assert_eq!(
        edit.text,
        "a: \"v2\" # {\"$promotion\": \"apps:billing:test\"}\nb: 'p # {\"$promotion\": \"apps:billing:test\"}'\nc: \"# {\\\"$promotion\\\": \\\"apps:billing:test\\\"}\"\n"
    );
    assert_eq!((edit.changed, edit.matched), (1, 1));
}

#[test]
fn apostrophe_inside_a_plain_scalar_does_not_hide_the_marker() {
    let text = "note: it's v1 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "v2");
    assert_eq!(
        edit.text,
        "note: v2 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}

#[test]
fn block_scalar_with_marker_for_the_target_is_an_error_naming_the_line() {
    let text = "a: 1\nscript: | # {\"$promotion\": \"apps:billing:test\"}\n  echo hi\n";
    let err = apply(text, &billing_test(), "1.2.3").unwrap_err();
    assert_eq!(
        err,
        MarkerError::Unusable(vec![LineProblem {
            line: 2,
            marker: "apps:billing:test".into(),
            problem: Problem::BlockScalar,
        }])
    );
    assert_eq!(
        err.to_string(),
        "cannot set the version at every promotion marker: line 2: marker \"apps:billing:test\": the value is a block scalar ('|' or '>') whose text is on the following lines"
    );
}

#[test]
fn markers_without_a_one_line_scalar_are_all_reported() {
    let text = concat!(
        "a: {x: 1} # {\"$promotion\": \"apps:billing:test\"}\n",
        "b: [1, 2] # {\"$promotion\": \"apps:billing:test\"}\n",
        "c: # {\"$promotion\": \"apps:billing:test\"}\n",
        "  - # {\"$promotion\": \"apps:billing:test\"}\n",
        "# {\"$promotion\": \"apps:billing:test\"}\n",
        "d: *anchor # {\"$promotion\": \"apps:billing:test\"}\n",
        "e: \"open # {\"$promotion\": \"apps:billing:test\"}\n",
        "f: \"x\" y # {\"$promotion\": \"apps:billing:test\"}\n",
        "g: a: b # {\"$promotion\": \"apps:billing:test\"}\n",
        "h: > # {\"$promotion\": \"apps:billing:test\"}\n",
    );
    assert_eq!(
        problems(text, &billing_test()),
        vec![
            (1, Problem::FlowCollection),
            (2, Problem::FlowCollection),
            (3, Problem::NoValue),
            (4, Problem::NoValue),
            (5, Problem::MarkerAlone),
            (6, Problem::Alias),
            (8, Problem::TextAfterQuoted),
            (9, Problem::MappingInValue),
            (10, Problem::BlockScalar),
        ]
    );
}

#[test]
fn marker_on_a_continuation_line_of_a_multi_line_scalar_is_an_error() {
    let plain = "desc: first words\n  more words # {\"$promotion\": \"apps:billing:test\"}\n";
    assert_eq!(
        problems(plain, &billing_test()),
        vec![(2, Problem::Continuation { line: 1 })]
    );
    let quoted = "desc: \"first\n  x\n  last\" # {\"$promotion\": \"apps:billing:test\"}\n";
    assert_eq!(
        problems(quoted, &billing_test()),
        vec![(3, Problem::Continuation { line: 1 })]
    );
}

#[test]
fn malformed_marker_of_this_pipeline_is_an_error_and_of_another_is_ignored() {
    let text =
        "a: 1 # {\"$promotion\": \"apps:billing\"}\nb: 1 # {\"$promotion\": \"apps:other\"}\n";
    assert_eq!(
        problems(text, &billing_test()),
        vec![(
            1,
            Problem::Malformed(
                "expected <namespace>:<name>:<environment>[:<cluster>], got 2 part(s)".into()
            )
        )]
    );
    let edit = applied(text, &prod(), "2");
    assert_eq!(edit.text, text);
}

#[test]
fn comments_that_are_not_json_objects_with_a_promotion_string_are_ignored() {
    let text = concat!(
        "a: 1 # $promotion: apps:billing:test\n",
        "b: 1 # {\"$promotion\": 3}\n",
        "c: 1 # [\"$promotion\", \"apps:billing:test\"]\n",
        "d: 1 # {\"$promotion\": \"apps:billing:test\"} trailing words\n",
        "e: 1 #{\"$promotion\": \"apps:billing:test\"}\n",
        "f: 1#{\"$promotion\": \"apps:billing:test\"}\n",
    );
    let edit = applied(text, &billing_test(), "v2");
    assert_eq!(edit.text, text.replace("e: 1 #", "e: v2 #"));
    assert_eq!((edit.changed, edit.matched), (1, 1));
}

#[test]
fn applying_the_same_version_twice_changes_nothing_the_second_time() {
    let text = "a: 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\nb: 'x' # {\"$promotion\": \"apps:billing:test\"}\nc: \"y\" # {\"$promotion\": \"apps:billing:test\"}\nd: z # {\"$promotion\": \"apps:billing:test\"}\n";
    for version in ["1.2.3", "1.10", "it's \"odd\" \\ #", "true"] {
        let first = applied(text, &billing_test(), version);
        assert_eq!(
            (first.changed, first.matched),
            (4, 4),
            "version {version:?}"
        );
        let second = applied(&first.text, &billing_test(), version);
        assert_eq!(second.text, first.text, "version {version:?}");
        assert_eq!(
            (second.changed, second.matched),
            (0, 4),
            "version {version:?}"
        );
    }
}

#[test]
fn scalar_already_at_the_version_is_left_byte_identical() {
    let text = "a: \"1.0.0\" # {\"$promotion\": \"apps:billing:test\"}\nb: 1.0 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(text, &billing_test(), "1.0.0");
    assert_eq!(
        edit.text,
        "a: \"1.0.0\" # {\"$promotion\": \"apps:billing:test\"}\nb: 1.0.0 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
    assert_eq!((edit.changed, edit.matched), (1, 2));
}

#[test]
fn empty_version_is_refused() {
    assert_eq!(
        apply("a: 1\n", &billing_test(), ""),
        Err(MarkerError::EmptyVersion)
    );
}

#[test]
fn markers_lists_every_marker_with_its_parsed_target() {
    let text = "a: 1 # {\"$promotion\": \"apps:billing:test\"}\n\nb: 1 # {\"$promotion\": \"apps:billing:prod:eu\"}\nc: 1 # {\"$promotion\": \"apps::prod\"}\nd: 1 # plain comment\n";
    let found = markers(text);
    assert_eq!(
        found,
        vec![
            Marker {
                line: 1,
                raw: "apps:billing:test".into(),
                target: Ok(MarkerTarget::new("apps", "billing", "test")),
            },
            Marker {
                line: 3,
                raw: "apps:billing:prod:eu".into(),
                target: Ok(MarkerTarget::new("apps", "billing", "prod").on_cluster("eu")),
            },
            Marker {
                line: 4,
                raw: "apps::prod".into(),
                target: Err(
                    "part 2 of <namespace>:<name>:<environment>[:<cluster>] is empty or holds whitespace"
                        .into()
                ),
            },
        ]
    );
    assert!(found[0].applies_to(&billing_test().on_cluster("anywhere")));
    assert!(!found[1].applies_to(&MarkerTarget::new("apps", "billing", "prod")));
}

#[test]
fn lines_that_only_look_like_dashes_do_not_open_a_value_for_the_next_line() {
    let trailing_dash = "- a -\n  v1 # {\"$promotion\": \"apps:billing:test\"}\n";
    assert_eq!(
        problems(trailing_dash, &billing_test()),
        vec![(2, Problem::Continuation { line: 1 })]
    );
    let indented_dashes = "  ---\n  v1 # {\"$promotion\": \"apps:billing:test\"}\n";
    assert_eq!(
        problems(indented_dashes, &billing_test()),
        vec![(2, Problem::Continuation { line: 1 })]
    );
    let document_start = "---\nv1 # {\"$promotion\": \"apps:billing:test\"}\n";
    let edit = applied(document_start, &billing_test(), "v2");
    assert_eq!(
        edit.text,
        "---\nv2 # {\"$promotion\": \"apps:billing:test\"}\n"
    );
}
