//! Label selectors (structured and string forms) and field selectors.

use std::collections::BTreeMap;

use drover_api::core::{Pod, PodSpec};
use drover_api::selector::{FieldSelector, LabelSelector, Selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parses_and_prints_selectors() {
    let table = [
        ("", ""),
        ("a=b", "a=b"),
        ("a==b", "a=b"),
        ("a = b", "a=b"),
        ("c!=d", "c!=d"),
        ("env in (x,y)", "env in (x,y)"),
        ("env in ( x , y )", "env in (x,y)"),
        ("tier notin (z)", "tier notin (z)"),
        ("!f", "!f"),
        ("g", "g"),
        ("a=", "a="),
        (
            "a=b,c!=d,env in (x,y),tier notin (z),!f,g",
            "a=b,c!=d,env in (x,y),tier notin (z),!f,g",
        ),
        ("app.kubernetes.io/name=web", "app.kubernetes.io/name=web"),
    ];
    for (input, want) in table {
        let s = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(s.to_string(), want, "{input:?}");
        assert_eq!(Selector::parse(want).ok(), Some(s), "re-parse of {want:?}");
    }
}

#[test]
fn refuses_bad_selectors() {
    for input in [
        "a=b,",
        ",a",
        "a b",
        "env on (x)",
        "env in (x",
        "env in x)",
        "Bad Key=x",
        "a=b c",
        "a=-x",
        "!",
        "a/b/c=d",
        // Kubernetes: the values set of in and notin can't be empty.
        "a notin ()",
        "a in ( )",
    ] {
        let err = Selector::parse(input).expect_err(input);
        assert!(err.to_string().contains("invalid selector"), "{err}");
    }
}

#[test]
fn matches_labels() {
    let l = labels(&[("app", "web"), ("env", "prod"), ("tier", "front")]);
    let table = [
        ("", true),
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("env in (prod,staging)", true),
        ("env in (dev)", false),
        ("env notin (dev)", true),
        ("missing notin (dev)", true),
        ("tier", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("app=web,env in (prod),!legacy", true),
        ("app=web,env in (dev)", false),
    ];
    for (input, want) in table {
        let s = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(s.matches(&l), want, "{input:?}");
    }
}

#[test]
fn label_selector_matches_like_its_string_form() {
    let sel: LabelSelector = yaml_serde::from_str(
        "matchLabels: {app: web}\nmatchExpressions:\n- {key: env, operator: In, values: [prod, staging]}\n- {key: legacy, operator: DoesNotExist}\n",
    )
    .expect("yaml");
    assert!(sel.validate("spec.selector").is_empty());
    assert_eq!(sel.to_string(), "app=web,env in (prod,staging),!legacy");
    for l in [
        labels(&[("app", "web"), ("env", "prod")]),
        labels(&[("app", "web"), ("env", "dev")]),
        labels(&[("app", "web"), ("env", "prod"), ("legacy", "1")]),
        labels(&[]),
    ] {
        assert_eq!(sel.matches(&l), sel.to_selector().matches(&l), "{l:?}");
    }
    assert!(LabelSelector::default().matches(&labels(&[])));

    let bad: LabelSelector = yaml_serde::from_str(
        "matchExpressions:\n- {key: env, operator: In}\n- {key: x, operator: Exists, values: [a]}\n- {key: y, operator: Near, values: [a]}\n",
    )
    .expect("yaml");
    let fields: Vec<String> = bad.validate("sel").0.into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "sel.matchExpressions[0].values",
            "sel.matchExpressions[1].values",
            "sel.matchExpressions[2].operator"
        ]
    );
}

#[test]
fn field_selectors() {
    let s = FieldSelector::parse("metadata.name=x,spec.nodeName!=y,status.phase==Running")
        .expect("parse");
    assert_eq!(
        s.fields().collect::<Vec<_>>(),
        ["metadata.name", "spec.nodeName", "status.phase"]
    );
    assert_eq!(
        s.to_string(),
        "metadata.name=x,spec.nodeName!=y,status.phase=Running"
    );
    let get = |f: &str| match f {
        "metadata.name" => Some("x".to_string()),
        "spec.nodeName" => Some("z".to_string()),
        "status.phase" => Some("Running".to_string()),
        _ => None,
    };
    assert!(s.matches(get));
    assert!(
        !FieldSelector::parse("spec.nodeName=y")
            .expect("p")
            .matches(get)
    );
    assert!(
        !FieldSelector::parse("spec.other=y")
            .expect("p")
            .matches(get)
    );
    assert!(FieldSelector::parse("metadata.name").is_err());
    assert!(FieldSelector::parse("=x").is_err());
    assert!(FieldSelector::parse("").expect("empty").is_empty());

    let mut pod = Pod::new("default", "p1", PodSpec::default());
    pod.spec.node_name = "node-1".into();
    let on_node =
        FieldSelector::parse("spec.nodeName=node-1,metadata.namespace=default").expect("parse");
    assert!(on_node.matches_object(&pod));
    assert!(on_node.check_supported::<Pod>().is_ok());
    let unscheduled = FieldSelector::parse("spec.nodeName=").expect("parse");
    assert!(!unscheduled.matches_object(&pod));
    let err = FieldSelector::parse("spec.bogus=1")
        .expect("parse")
        .check_supported::<Pod>()
        .expect_err("unsupported");
    assert!(err.to_string().contains("spec.nodeName"), "{err}");
}
