//! The writer judged by an independent reader: PyYAML (`yaml.safe_load`, YAML 1.1, the
//! reader cloud-init uses) must read back exactly the value written.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::*;

/// Runs a PyYAML `expr` over `text` (on standard input as `src`) and returns its JSON (a
/// missing python3 or PyYAML fails the test: tests/install-deps.sh installs them).
fn run_pyyaml(text: &str, expr: &str) -> Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            &format!("import yaml,json,sys; src=sys.stdin.read(); print(json.dumps({expr}))"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (tests/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML refused:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads YAML with PyYAML and returns it as JSON.
pub(crate) fn pyyaml(text: &str) -> Value {
    run_pyyaml(text, "yaml.safe_load(src)")
}

/// Reads a multi-document stream with PyYAML.
pub(crate) fn pyyaml_all(text: &str) -> Value {
    run_pyyaml(text, "list(yaml.safe_load_all(src))")
}

/// Asserts `got == want`, naming the first place they differ.
fn assert_same(got: &Value, want: &Value, path: &str, text: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => assert_same(gv, wv, &format!("{path}.{k:?}"), text),
                    None => panic!(
                        "{path}: key {k:?} missing; keys read: {:?}\n{text}",
                        g.keys().collect::<Vec<_>>()
                    ),
                }
            }
            assert_eq!(g.len(), w.len(), "{path}: extra keys\n{text}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: lengths\n{text}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_same(gv, wv, &format!("{path}[{i}]"), text);
            }
        }
        _ => assert_eq!(got, want, "at {path}"),
    }
}

const TRICKY: &[&str] = &[
    "",
    " ",
    " leading",
    "trailing ",
    "a: b",
    "a:b",
    "ends:",
    ":",
    "# not a comment",
    "a #b",
    "a#b",
    "- item",
    "-",
    "-a",
    "---",
    "...",
    "yes",
    "no",
    "on",
    "off",
    "Yes",
    "NO",
    "y",
    "n",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "0",
    "12",
    "-3",
    "1.5",
    ".5",
    "1e3",
    "0x1f",
    "0o17",
    "1_000",
    "1:30",
    "0644",
    "0755",
    ".inf",
    "-.Inf",
    ".nan",
    "2025-11-24",
    "2025-11-24T10:00:00Z",
    "2001-12-14 21:59:43.10 -5",
    "line one\nline two",
    "ends with newline\n",
    "two newlines\n\n",
    "\nstarts with newline",
    "trailing space \nsecond",
    "tab\there",
    "\ttab first",
    "quote ' single",
    "'quoted'",
    "\"double\"",
    "back\\slash",
    "{flow}",
    "[flow]",
    "a, b",
    "&anchor",
    "*alias",
    "!tag",
    "|",
    ">",
    "%directive",
    "@at",
    "`tick",
    "?",
    "? key",
    "=",
    "<<",
    "ünïcödé",
    "日本語",
    "emoji 🚀",
    "nel\u{85}here",
    "ls\u{2028}here",
    "bom\u{feff}",
    "bell\u{7}",
    "ALL=(ALL) NOPASSWD:ALL",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== user@host",
    "system:bootstrappers:kubeadm:default-node-token",
    "https://192.168.1.10:6443",
    "unix:///run/containerd/containerd.sock",
];

/// Every string above, as a value, a key and a list item, in both sequence styles.
#[test]
fn pyyaml_reads_back_tricky_strings() {
    let mut map = serde_json::Map::new();
    for (i, s) in TRICKY.iter().enumerate() {
        map.insert(format!("k{i}"), json!(s));
        map.insert((*s).to_string(), json!(i));
    }
    let value = json!({
        "values": map,
        "list": TRICKY,
        "nested": [{"a": TRICKY, "b": {"c": TRICKY}}, [TRICKY]],
        "numbers": [0, -1, 1.5, 1e300, i64::MAX, u64::MAX],
        "others": [null, true, false, [], {}],
    });
    for seq in [SeqIndent::Indented, SeqIndent::Flush] {
        let text = write(&Yaml::from(&value), seq);
        assert_same(&pyyaml(&text), &value, "", &text);
    }
}

/// All two-character strings over the characters YAML treats specially.
#[test]
fn pyyaml_reads_back_every_short_string() {
    let chars = [
        ' ', ':', '#', '-', '\'', '"', '\n', 'a', '0', '!', '&', '*', '?', '|', '>', '%', '@', '`',
        ',', '[', ']', '{', '}', '\t', '.', '~', '\\', '=', '<',
    ];
    let mut strings = Vec::new();
    for a in chars {
        strings.push(a.to_string());
        for b in chars {
            strings.push(format!("{a}{b}"));
            strings.push(format!("x{a}{b}"));
            strings.push(format!("{a}{b}x"));
        }
    }
    let value = json!({ "items": strings, "as_keys": strings.iter().map(|s| (s.clone(), json!(1))).collect::<serde_json::Map<_, _>>() });
    let text = to_yaml(&value);
    assert_eq!(pyyaml(&text), value);
}

#[test]
fn quoted_strings_are_always_double_quoted_and_read_back() {
    let doc = Yaml::map([
        ("a", Yaml::quoted("plain")),
        ("b", Yaml::quoted("x\"y: z\n- w\\")),
        (
            "c",
            Yaml::Seq(vec![Yaml::quoted("1.30"), Yaml::quoted("yes")]),
        ),
    ]);
    let text = write(&doc, SeqIndent::Flush);
    assert!(text.starts_with("a: \"plain\"\n"), "{text}");
    assert_eq!(
        pyyaml(&text),
        json!({"a": "plain", "b": "x\"y: z\n- w\\", "c": ["1.30", "yes"]})
    );
}

#[test]
fn streams_hold_comments_and_documents() {
    let docs = [
        Document {
            comments: vec!["# first".into(), "# second".into()],
            body: Yaml::map([("kind", Yaml::str("A")), ("empty", Yaml::empty_map())]),
        },
        Document {
            comments: vec![],
            body: Yaml::map([("kind", Yaml::str("B")), ("list", Yaml::Seq(vec![]))]),
        },
    ];
    let text = write_stream(&docs, SeqIndent::Flush);
    assert_eq!(
        text,
        "# first\n# second\nkind: A\nempty: {}\n---\nkind: B\nlist: []\n"
    );
    assert_eq!(
        pyyaml_all(&text),
        json!([{"kind": "A", "empty": {}}, {"kind": "B", "list": []}])
    );
}

#[test]
fn flow_sequences_read_back() {
    let items: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
    let doc = Yaml::map([
        ("a", Yaml::FlowSeq(items.clone())),
        ("b", Yaml::FlowSeq(vec!["NoCloud".into(), "None".into()])),
        ("c", Yaml::FlowSeq(vec![])),
    ]);
    let text = write(&doc, SeqIndent::Indented);
    assert!(text.contains("b: [NoCloud, None]\n"), "{text}");
    assert_eq!(
        pyyaml(&text),
        json!({"a": items, "b": ["NoCloud", "None"], "c": []})
    );
}

#[test]
fn sequence_styles() {
    let v = json!({"a": ["x", {"b": ["z"]}]});
    assert_eq!(to_yaml(&v), "a:\n  - x\n  - b:\n      - z\n");
    assert_eq!(
        write(&Yaml::from(&v), SeqIndent::Flush),
        "a:\n- x\n- b:\n  - z\n"
    );
    assert!(cloud_config(&json!({"a": 1})).starts_with("#cloud-config\na: 1\n"));
    // Scalars and empty collections at the top.
    assert_eq!(to_yaml(&json!("yes")), "\"yes\"\n");
    assert_eq!(to_yaml(&json!({})), "{}\n");
}

mod random {
    use proptest::prelude::*;

    use super::*;

    /// Strings from the characters YAML gives a meaning to, plus letters, digits, blanks, line
    /// breaks and a few non-ASCII ones (including the YAML 1.1 line breaks NEL, LS and PS).
    fn tricky_string() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                'a', 'Z', '0', '1', '9', ' ', ' ', '\t', '\n', '\r', ':', '#', '-', '?', ',', '[',
                ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '\\', '.', '~',
                '=', '<', '+', '_', '/', 'é', '✓', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}',
                '\u{1}', '\u{7f}',
            ]),
            0..12,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        // One PyYAML run per case, each reading 64 strings as values, keys and list items.
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn pyyaml_reads_back_random_strings(
            strings in proptest::collection::vec(tricky_string(), 64),
            flush in any::<bool>(),
        ) {
            let keys: serde_json::Map<String, Value> =
                strings.iter().map(|s| (s.clone(), json!(s))).collect();
            let value = json!({"list": strings, "map": keys, "nested": [strings]});
            let seq = if flush { SeqIndent::Flush } else { SeqIndent::Indented };
            let text = write(&Yaml::from(&value), seq);
            assert_same(&pyyaml(&text), &value, "", &text);
            let flow = write(&Yaml::map([("f", Yaml::FlowSeq(strings.clone()))]), seq);
            prop_assert_eq!(pyyaml(&flow), json!({"f": strings}));
        }
    }
}
