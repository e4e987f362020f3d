//! Malformed requests: each gets the expected structured error, and nothing changes.

mod common;

use common::start;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    ctype: &'static str,
    body: String,
    code: u16,
    reason: &'static str,
    /// A field path the error must name (for Invalid).
    field: Option<&'static str>,
}

fn pod_with(container_extra: &str, meta: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{{meta}}},"spec":{{"containers":[{{"name":"c","command":["true"]{container_extra}}}]}}}}"#
    )
}

#[tokio::test]
async fn malformed_requests_get_structured_errors_and_change_nothing() {
    let s = start().await;
    let rest = s.rest();
    let pods = "/api/v1/namespaces/default/pods";
    let cases = vec![
        Case { name: "malformed JSON", method: "POST", path: pods, ctype: "application/json", body: "{\"apiVersion\":".into(), code: 400, reason: "BadRequest", field: None },
        Case { name: "malformed YAML", method: "POST", path: pods, ctype: "application/yaml", body: "kind: Pod\n  - : [".into(), code: 400, reason: "BadRequest", field: None },
        Case { name: "unknown kind", method: "POST", path: "/api/v1/namespaces/default/widgets", ctype: "application/json", body: "{}".into(), code: 404, reason: "NotFound", field: None },
        Case { name: "unknown group", method: "GET", path: "/apis/nope.example.com/v1/things", ctype: "", body: String::new(), code: 404, reason: "NotFound", field: None },
        Case { name: "unknown field", method: "POST", path: pods, ctype: "application/json", body: pod_with(r#","bogus":1"#, r#""name":"u""#), code: 422, reason: "Invalid", field: Some("spec.containers[0]") },
        Case { name: "invalid name", method: "POST", path: pods, ctype: "application/json", body: pod_with("", r#""name":"Not_Valid""#), code: 422, reason: "Invalid", field: Some("metadata.name") },
        Case { name: "missing name", method: "POST", path: pods, ctype: "application/json", body: pod_with("", ""), code: 422, reason: "Invalid", field: Some("metadata.name") },
        Case { name: "negative quantity", method: "POST", path: pods, ctype: "application/json", body: pod_with(r#","resources":{"requests":{"cpu":"-1"}}"#, r#""name":"n""#), code: 422, reason: "Invalid", field: Some("spec.containers[0].resources.requests[cpu]") },
        Case { name: "garbled quantity", method: "POST", path: pods, ctype: "application/json", body: pod_with(r#","resources":{"requests":{"memory":"12Qx"}}"#, r#""name":"g""#), code: 422, reason: "Invalid", field: Some("spec.containers[0].resources.requests") },
        Case { name: "fractional GPU count", method: "POST", path: pods, ctype: "application/json", body: pod_with(r#","resources":{"limits":{"nvidia.com/gpu":"1.5"}}"#, r#""name":"f""#), code: 422, reason: "Invalid", field: Some("spec.containers[0].resources.limits[nvidia.com/gpu]") },
        Case { name: "no containers", method: "POST", path: pods, ctype: "application/json", body: r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"e"},"spec":{"containers":[]}}"#.into(), code: 422, reason: "Invalid", field: Some("spec.containers") },
        Case { name: "kind mismatch", method: "POST", path: pods, ctype: "application/json", body: r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"k"}}"#.into(), code: 400, reason: "BadRequest", field: None },
        Case { name: "namespace mismatch", method: "POST", path: pods, ctype: "application/json", body: pod_with("", r#""name":"m","namespace":"other""#), code: 400, reason: "BadRequest", field: None },
        Case { name: "oversized body", method: "POST", path: pods, ctype: "application/json", body: format!("{{\"x\":\"{}\"}}", "a".repeat(4 * 1024 * 1024)), code: 413, reason: "RequestEntityTooLarge", field: None },
        Case { name: "bad label selector", method: "GET", path: "/api/v1/pods?labelSelector=a%20in%20(", ctype: "", body: String::new(), code: 400, reason: "BadRequest", field: None },
        Case { name: "unsupported patch type", method: "PATCH", path: "/api/v1/namespaces/default/pods/x", ctype: "application/strategic-merge-patch+json", body: "{}".into(), code: 415, reason: "UnsupportedMediaType", field: None },
        Case { name: "bad propagation policy", method: "DELETE", path: "/api/v1/namespaces/default/pods/x?propagationPolicy=Sideways", ctype: "", body: String::new(), code: 400, reason: "BadRequest", field: None },
        Case { name: "invalid restart policy", method: "POST", path: pods, ctype: "application/json", body: r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"rp"},"spec":{"restartPolicy":"Sometimes","containers":[{"name":"c","command":["true"]}]}}"#.into(), code: 422, reason: "Invalid", field: Some("spec.restartPolicy") },
    ];
    // The patch and delete cases need an object to aim at.
    let r = rest
        .post_json(pods, &common::pod_json("default", "x"))
        .await;
    assert_eq!(r.code, 201);
    let before = rest.get("/api/v1/pods").await.json();
    for c in &cases {
        let r = rest.call(c.method, c.path, c.ctype, c.body.clone()).await;
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.code, c.code, "{}: {body}", c.name);
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: not a Status ({e}): {body}", c.name));
        assert_eq!(v["kind"], "Status", "{}", c.name);
        assert_eq!(v["reason"], c.reason, "{}: {body}", c.name);
        assert!(
            !v["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            c.name
        );
        if let Some(field) = c.field {
            let causes = v["details"]["causes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                causes
                    .iter()
                    .any(|cause| cause["field"].as_str().unwrap_or("").starts_with(field)),
                "{}: no cause names {field}: {body}",
                c.name
            );
        }
    }
    let after = rest.get("/api/v1/pods").await.json();
    assert_eq!(
        before["items"], after["items"],
        "a refused request changed something"
    );
}

#[tokio::test]
async fn grpc_errors_carry_the_same_structure() {
    let s = start().await;
    let c = s.client();
    let t = drover_client::target(
        &<drover_api::core::Pod as drover_api::Resource>::info(),
        Some("default"),
        "",
        "",
    );
    let err = c
        .create_raw(
            t.clone(),
            pod_with(r#","bogus":1"#, r#""name":"u""#).into_bytes(),
        )
        .await
        .unwrap_err();
    let status = err.status().expect("a structured status");
    assert_eq!(status.reason, drover_api::Reason::Invalid);
    assert!(
        status
            .fields()
            .iter()
            .any(|f| f.starts_with("spec.containers[0]")),
        "{status:?}"
    );
    let err = c
        .create_raw(t.clone(), vec![b'x'; 4 * 1024 * 1024])
        .await
        .unwrap_err();
    assert_eq!(
        err.reason(),
        Some(drover_api::Reason::RequestEntityTooLarge),
        "{err}"
    );
    let err = c.create_raw(t, b"{".to_vec()).await.unwrap_err();
    assert_eq!(err.reason(), Some(drover_api::Reason::BadRequest), "{err}");
}
