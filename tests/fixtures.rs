//! The fixtures themselves work: the registry serves, the busybox image is in it.

use crate::util::{busybox::busybox, tool, Registry};

#[test]
fn busybox_image_is_in_the_registry() {
    let image = busybox();
    let out = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", image.reference),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("skopeo json");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().map(|l| l.len()), Some(1));
    assert!(Registry::shared()
        .log_text()
        .contains("PUT /v2/library/busybox/manifests/latest"));
}
