use http::HeaderValue;

use super::*;

fn secret() -> TenantSecret {
    TenantSecret::from_bytes([9; 32])
}

fn tenant_of(
    upstream: &str,
    headers: &[(&'static str, &'static str)],
    query: Option<&str>,
) -> Tenant {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_static(value));
    }
    Tenant::of(&secret(), upstream, &Credential::from_request(&map, query))
}

#[test]
fn golden_tenant() {
    // keyed_blake3([9; 32], "openai" ‖ 0 ‖ "sk-a"): replicas sharing a registry rely on it.
    let tenant = tenant_of("openai", &[("authorization", "Bearer sk-a")], None);
    let want = blake3::keyed_hash(&[9; 32], b"openai\0sk-a");
    assert_eq!(tenant.as_bytes(), want.as_bytes());
    assert_eq!(
        format!("{tenant:?}"),
        format!("Tenant({})", &want.to_hex()[..16])
    );
    assert_eq!(&want.to_hex()[..16], "9e967b2bc0b74785");
}

#[test]
fn the_same_credential_is_the_same_tenant_on_one_upstream_only() {
    let bearer = [("authorization", "Bearer sk-a")];
    assert_eq!(
        tenant_of("openai", &bearer, None),
        tenant_of("openai", &[("authorization", "bearer  sk-a ")], None),
        "the scheme is case-insensitive, the token trimmed"
    );
    assert_ne!(
        tenant_of("openai", &bearer, None),
        tenant_of("openai-eu", &bearer, None)
    );
    assert_ne!(
        tenant_of("openai", &bearer, None),
        tenant_of("openai", &[("authorization", "Bearer sk-b")], None)
    );
    assert_ne!(
        tenant_of("openai", &bearer, None),
        Tenant::of(
            &TenantSecret::from_bytes([8; 32]),
            "openai",
            &Credential {
                key: Some(b"sk-a"),
                ..Credential::default()
            }
        ),
        "the secret keys the hash"
    );
}

#[test]
fn the_first_present_credential_counts() {
    let x_api_key = tenant_of("anthropic", &[("x-api-key", "k1")], None);
    assert_eq!(
        x_api_key,
        tenant_of(
            "anthropic",
            &[("x-api-key", "k1"), ("x-goog-api-key", "k2")],
            None
        )
    );
    assert_eq!(
        tenant_of("gemini", &[("x-goog-api-key", "k2")], None),
        tenant_of("gemini", &[], Some("alt=sse&key=k2")),
        "a key in the query is the same credential"
    );
    assert_eq!(
        tenant_of("x", &[("authorization", "Bearer k1")], None),
        tenant_of("x", &[("x-api-key", "k1")], None),
        "the header a key came in does not matter"
    );
    assert_ne!(
        tenant_of("x", &[("authorization", "Basic dTpw")], None),
        tenant_of("x", &[("authorization", "Basic dTpx")], None),
        "other schemes still name the caller"
    );
}

#[test]
fn openai_organization_and_project_split_a_key() {
    let key = ("authorization", "Bearer sk-a");
    let plain = tenant_of("openai", &[key], None);
    let org = tenant_of("openai", &[key, ("openai-organization", "org-1")], None);
    let project = tenant_of("openai", &[key, ("openai-project", "org-1")], None);
    assert_ne!(plain, org);
    assert_ne!(org, project, "an organization is not a project");
    assert_ne!(
        org,
        tenant_of("openai", &[key, ("openai-organization", "org-2")], None)
    );
}

#[test]
fn no_credential_is_one_tenant_per_upstream() {
    assert_eq!(tenant_of("vllm", &[], None), tenant_of("vllm", &[], None));
    assert_eq!(
        tenant_of("vllm", &[], Some("key=")),
        tenant_of("vllm", &[("authorization", "")], None)
    );
    assert_ne!(tenant_of("vllm", &[], None), tenant_of("sglang", &[], None));
    assert_ne!(
        tenant_of("vllm", &[], None),
        tenant_of("vllm", &[("x-api-key", "k")], None)
    );
}

#[test]
fn credentials_never_print() {
    let mut map = HeaderMap::new();
    map.insert("x-api-key", HeaderValue::from_static("sk-secret"));
    let shown = format!("{:?}", Credential::from_request(&map, None));
    assert!(!shown.contains("sk-secret"), "{shown}");
    assert_eq!(format!("{:?}", secret()), "TenantSecret(..)");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachet-tenant-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_generated_secret_is_private_and_reused() {
    let dir = scratch("generated");
    let data = dir.join("data");
    let first = TenantSecret::load_or_create(None, &data).unwrap();
    let path = data.join(TenantSecret::FILE);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = TenantSecret::load_or_create(Some("  "), &data).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        TenantSecret::from_config(&text),
        first,
        "the file's content works as configuration"
    );
    let leftovers = fs::read_dir(&data).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file is left behind");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_configured_secret_wins_and_a_bad_file_is_an_error() {
    let dir = scratch("configured");
    let configured = TenantSecret::load_or_create(Some("correct horse"), &dir).unwrap();
    assert!(!dir.exists(), "nothing is written when configured");
    assert_eq!(configured, TenantSecret::from_config("correct horse"));
    assert_ne!(
        configured,
        TenantSecret::from_config("correct horse battery")
    );
    let hex = "0f".repeat(32);
    assert_eq!(
        TenantSecret::from_config(&hex),
        TenantSecret::from_bytes([0x0f; 32])
    );
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(TenantSecret::FILE), "+f".repeat(32)).unwrap();
    assert!(matches!(
        TenantSecret::load_or_create(None, &dir),
        Err(SecretError::Malformed { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}
