use super::*;

#[test]
fn plain_values_and_references_parse() {
    assert_eq!(
        SecretSpec::parse("hunter2").unwrap(),
        SecretSpec::Value(Secret::new("hunter2".into()))
    );
    assert_eq!(
        SecretSpec::parse("ssm:/media/prod/shared-secret").unwrap(),
        SecretSpec::Ssm("/media/prod/shared-secret".into())
    );
    assert!(SecretSpec::parse("ssm:/a").unwrap().is_ssm());
    assert!(!SecretSpec::parse("ssmish").unwrap().is_ssm());
    for bad in ["ssm:", "ssm:  ", "ssm:/a b", "ssm:/a,/b", "ssm:/ä"] {
        assert!(SecretSpec::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_shows_parameter_names_but_never_values() {
    let spec = SecretSpec::parse("value-marker-1").unwrap();
    assert!(!format!("{spec:?}").contains("marker"));
    let handle = SecretHandle::from_value(Secret::new("value-marker-2".into()));
    assert!(!format!("{handle:?}").contains("marker"));
    let secrets = Secrets::new(DEFAULT_TTL);
    let h = secrets.handle(&SecretSpec::Ssm("/p/name".into()));
    assert!(format!("{h:?}").contains("/p/name"));
    assert_eq!(h.parameter_name(), Some("/p/name"));
}

#[tokio::test]
async fn values_need_no_client_and_references_start_empty() {
    let secrets = Secrets::new(DEFAULT_TTL);
    let v = secrets.handle(&SecretSpec::Value(Secret::new("v".into())));
    secrets.load().await.unwrap();
    secrets.refresh_stale().await;
    assert!(
        !secrets.client.initialized(),
        "no AWS client without references"
    );
    assert_eq!(v.current().unwrap().expose(), "v");
    assert!(secrets.parameter_names().is_empty());

    let r = secrets.handle(&SecretSpec::Ssm("/a".into()));
    assert!(r.current().is_none(), "never loaded");
    assert_eq!(secrets.parameter_names(), ["/a"]);
}

fn fetched(values: &[(&str, &str)], missing: &[&str]) -> Fetched {
    Fetched {
        values: values
            .iter()
            .map(|(n, v)| ((*n).to_string(), Secret::new((*v).to_string())))
            .collect(),
        missing: missing.iter().map(|n| (*n).to_string()).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn apply_replaces_changed_values_and_keeps_the_last_good_one() {
    let secrets = Secrets::new(Duration::from_secs(60));
    let a = secrets.handle(&SecretSpec::Ssm("/a".into()));
    let b = secrets.handle(&SecretSpec::Ssm("/b".into()));
    secrets.apply(fetched(&[("/a", "one"), ("/b", "two")], &[]));
    let first = a.current().unwrap();
    assert_eq!(first.expose(), "one");
    assert!(secrets.due_names(Instant::now()).is_empty());

    // Same value again: the Arc is kept, so derived keys are not rebuilt.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(secrets.due_names(Instant::now()), ["/a", "/b"]);
    secrets.apply(fetched(&[("/a", "one"), ("/b", "three")], &[]));
    assert!(Arc::ptr_eq(&first, &a.current().unwrap()));
    assert_eq!(b.current().unwrap().expose(), "three");

    // Deleted in SSM later: the last good value stays, and it is retried soon.
    tokio::time::advance(Duration::from_secs(61)).await;
    secrets.apply(fetched(&[("/b", "three")], &["/a"]));
    assert_eq!(a.current().unwrap().expose(), "one");
    assert_eq!(secrets.due_names(Instant::now()), Vec::<String>::new());
    tokio::time::advance(RETRY_AFTER).await;
    assert_eq!(secrets.due_names(Instant::now()), ["/a"]);
    assert_eq!(
        secrets.next_due(),
        Some(Instant::now()),
        "earliest due is the retry"
    );
}

#[test]
fn errors_name_parameters_only() {
    let e = SecretsError::Missing(vec!["/a".into(), "/b".into()]);
    assert_eq!(e.to_string(), "ssm parameter(s) not found: /a, /b");
    let e = SecretsError::Unavailable {
        names: vec!["/a".into()],
        detail: "dispatch failure".into(),
    };
    assert!(e.to_string().contains("/a") && e.to_string().contains("dispatch failure"));
}
