//! Quantities: parsing, canonical printing, round trips, ordering, arithmetic and errors.

use drover_api::quantity::{
    NVIDIA_GPU, Quantity, QuantityError, ResourceList, is_extended_resource,
};

fn q(s: &str) -> Quantity {
    match Quantity::parse(s) {
        Ok(q) => q,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

#[test]
fn parses_and_prints_canonically() {
    let table = [
        ("500m", "500m"),
        ("4Gi", "4Gi"),
        ("2", "2"),
        ("1500m", "1500m"),
        ("1.5", "1500m"),
        ("0.5", "500m"),
        (".5", "500m"),
        ("5.", "5"),
        ("1.0", "1"),
        ("1000m", "1"),
        ("1000", "1k"),
        ("1536", "1536"),
        ("1k", "1k"),
        ("1M", "1M"),
        ("2G", "2G"),
        ("3T", "3T"),
        ("1P", "1P"),
        ("1E", "1E"),
        ("1Ki", "1Ki"),
        ("100Ki", "100Ki"),
        ("2048Ki", "2Mi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1.1Gi", "1181116006400m"),
        ("1Ti", "1Ti"),
        ("1Ei", "1Ei"),
        ("1e3", "1e3"),
        ("1E3", "1e3"),
        ("12e6", "12e6"),
        ("1.5e3", "1500"),
        ("5e-3", "5e-3"),
        ("0.1m", "100u"),
        ("1n", "1n"),
        ("1u", "1u"),
        ("0", "0"),
        ("0Gi", "0"),
        ("+5", "5"),
        ("-1", "-1"),
        ("-500m", "-500m"),
        ("007", "7"),
    ];
    for (input, want) in table {
        assert_eq!(q(input).to_string(), want, "printing {input:?}");
        // Printing is stable: the printed form parses to the same value and prints the same.
        assert_eq!(q(want), q(input), "round trip of {input:?}");
        assert_eq!(q(want).to_string(), want, "re-printing {want:?}");
    }
}

#[test]
fn values_round_up_like_kubernetes() {
    let table = [
        ("500m", 500, 1),
        ("1", 1000, 1),
        ("1.5", 1500, 2),
        ("0.1m", 1, 1),
        ("1Gi", 1_073_741_824_000, 1_073_741_824),
        ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
        ("-1500m", -1500, -1),
        ("0", 0, 0),
    ];
    for (input, milli, value) in table {
        assert_eq!(q(input).milli(), milli, "milli of {input}");
        assert_eq!(q(input).value(), value, "value of {input}");
    }
    assert!(q("2").is_whole());
    assert!(!q("1.5").is_whole());
    assert!(q("-1").is_negative());
    assert!(!q("0").is_negative());
}

#[test]
fn refuses_garbled_quantities() {
    let bad = [
        "",
        "abc",
        "Gi",
        "1x",
        "1GB",
        "1K",
        "1 Gi",
        " 1",
        "1.2.3",
        "--1",
        "+-1",
        "1e",
        "1ee3",
        "1e3.5",
        "1Gii",
        "m",
        ".",
        "-",
        "0x10",
        "1e99",
        "1,5",
        "99999999999999999999999999999",
        "1e3Gi",
    ];
    for input in bad {
        let err = Quantity::parse(input).expect_err(input);
        let msg = err.to_string();
        match err {
            QuantityError::TooLarge { .. } => assert!(msg.contains("too large"), "{msg}"),
            _ => assert!(msg.contains("expected"), "{input:?}: {msg}"),
        }
    }
}

#[test]
fn orders_and_compares_by_value() {
    assert_eq!(q("1Gi"), q("1024Mi"));
    assert_eq!(q("1"), q("1000m"));
    assert_eq!(q("1e3"), q("1k"));
    assert!(q("1Gi") > q("1G"));
    assert!(q("999m") < q("1"));
    assert!(q("-1") < q("0"));
    let mut v = [q("2"), q("500m"), q("1Ki"), q("0"), q("1k")];
    v.sort();
    let printed: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    assert_eq!(printed, ["0", "500m", "2", "1k", "1Ki"]);
}

#[test]
fn arithmetic_prints_canonically() {
    assert_eq!((q("500m") + q("1")).to_string(), "1500m");
    assert_eq!((q("1Gi") - q("512Mi")).to_string(), "512Mi");
    assert_eq!((q("1") - q("1500m")).to_string(), "-500m");
    assert_eq!((Quantity::zero() + q("1Gi")).to_string(), "1Gi");
    let sum: Quantity = ["100m", "200m", "700m"].iter().map(|s| q(s)).sum();
    assert_eq!(sum.to_string(), "1");
    let mut acc = q("1");
    acc += q("1");
    acc -= q("500m");
    assert_eq!(acc.to_string(), "1500m");
    assert_eq!(Quantity::from_milli(1500).to_string(), "1500m");
    assert_eq!(Quantity::from_value(3000).to_string(), "3k");
    assert_eq!(Quantity::from_value(2).to_string(), "2");
    assert_eq!(
        Quantity::from_bytes_binary(4 * 1024 * 1024 * 1024).to_string(),
        "4Gi"
    );
    // Below 1024 a binary quantity prints in decimal, as Kubernetes does.
    assert_eq!(Quantity::from_bytes_binary(1000).to_string(), "1k");
    assert_eq!(Quantity::from_bytes_binary(1500).to_string(), "1500");
    assert!(q("1").checked_add(q("9223372036854775807")).is_none());
}

#[test]
fn serde_accepts_strings_and_numbers() {
    let list: ResourceList = serde_json::from_str(
        r#"{"cpu": 2, "memory": "4Gi", "nvidia.com/gpu": "1", "x.io/y": 0.5}"#,
    )
    .expect("json");
    assert_eq!(list["cpu"].to_string(), "2");
    assert_eq!(list["x.io/y"].to_string(), "500m");
    let json = serde_json::to_string(&list).expect("serialise");
    assert_eq!(
        json,
        r#"{"cpu":"2","memory":"4Gi","nvidia.com/gpu":"1","x.io/y":"500m"}"#
    );
    let yaml: ResourceList =
        yaml_serde::from_str("cpu: 0.5\nmemory: 512Mi\nnvidia.com/gpu: 8\n").expect("yaml");
    assert_eq!(yaml["cpu"], q("500m"));
    assert_eq!(yaml[NVIDIA_GPU], q("8"));
    let err = serde_json::from_str::<ResourceList>(r#"{"memory": "4GB"}"#).expect_err("4GB");
    assert!(err.to_string().contains("expected"), "{err}");
    assert!(serde_json::from_str::<ResourceList>(r#"{"cpu": true}"#).is_err());
}

#[test]
fn extended_resources() {
    for name in ["nvidia.com/gpu", "amd.com/gpu", "example.com/foo"] {
        assert!(is_extended_resource(name), "{name}");
    }
    for name in [
        "cpu",
        "memory",
        "hugepages-2Mi",
        "kubernetes.io/foo",
        "node.kubernetes.io/x",
    ] {
        assert!(!is_extended_resource(name), "{name}");
    }
}

proptest::proptest! {
    /// Whatever a quantity prints parses back to the same value, in every notation.
    #[test]
    fn printing_round_trips(milli in -10i64.pow(15)..10i64.pow(15), bytes in 0i64..(1 << 50)) {
        let d = Quantity::from_milli(milli);
        proptest::prop_assert_eq!(Quantity::parse(&d.to_string()).ok(), Some(d));
        let b = Quantity::from_bytes_binary(bytes);
        proptest::prop_assert_eq!(Quantity::parse(&b.to_string()).ok(), Some(b));
        let e = Quantity::parse(&format!("{milli}e-3")).expect("exponent form");
        proptest::prop_assert_eq!(e.milli(), milli);
        proptest::prop_assert_eq!(Quantity::parse(&e.to_string()).ok(), Some(e));
    }
}
