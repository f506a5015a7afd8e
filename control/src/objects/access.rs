//! What an import needs from the Secrets and ConfigMaps a DataVolume names, read when the
//! import starts (as CDI's importer pod mounts them when it starts):
//!
//! - `secretRef`: a Secret with `accessKeyId` (user name) and `secretKey` (password),
//!   sent as HTTP basic auth, or as the registry's credentials;
//! - `certConfigMap`: a ConfigMap whose every value is a PEM CA certificate (bundle)
//!   trusted for that source besides the system roots;
//! - `extraHeaders` (`Name: value`) and `secretExtraHeaders` (Secrets whose every value
//!   is one such header), sent with every HTTP request.
//!
//! A reference that cannot be read (missing, a key absent, not text) fails the import
//! attempt with an error naming the object and the field; it is retried, so applying the
//! Secret later lets the import go on.

use platter_api::datavolume::DataVolumeSource;
use platter_api::secret::{parse_header, ACCESS_KEY_ID, SECRET_KEY};
use platter_api::{ConfigMap, Kind, Object, Secret};
use platter_snapshotter::Store;

use super::{get, key, ObjectError};
use crate::api::RegistryParams;

/// `params` with the credentials, CA certificates and headers of `src` (a DataVolume's
/// source in namespace `ns`) filled in.
pub fn source_access(
    store: &Store,
    ns: &str,
    src: &DataVolumeSource,
    mut params: RegistryParams,
) -> Result<RegistryParams, ObjectError> {
    let (at, secret_ref, cert_config_map) = match (&src.http, &src.registry) {
        (Some(h), _) => ("spec.source.http", &h.secret_ref, &h.cert_config_map),
        (None, Some(r)) => ("spec.source.registry", &r.secret_ref, &r.cert_config_map),
        (None, None) => return Ok(params),
    };
    if let Some(name) = secret_ref {
        let field = format!("{at}.secretRef");
        let s = secret(store, ns, name, &field)?;
        let text = |k: &str| {
            s.text(k)
                .map_err(|e| bad(Kind::Secret, ns, name, &field, e))?
                .ok_or_else(|| bad(Kind::Secret, ns, name, &field, format!("has no data.{k}")))
        };
        let (user, password) = (text(ACCESS_KEY_ID)?, text(SECRET_KEY)?);
        if user.is_empty() || user.contains(':') {
            return Err(bad(
                Kind::Secret,
                ns,
                name,
                &field,
                format!("data.{ACCESS_KEY_ID} must be a user name, not empty and without ':'"),
            ));
        }
        params.creds = Some(format!("{user}:{password}"));
    }
    if let Some(name) = cert_config_map {
        let field = format!("{at}.certConfigMap");
        let cm = config_map(store, ns, name, &field)?;
        let values = cm
            .values()
            .map_err(|e| bad(Kind::ConfigMap, ns, name, &field, e))?;
        if values.is_empty() {
            return Err(bad(
                Kind::ConfigMap,
                ns,
                name,
                &field,
                "holds no certificate".into(),
            ));
        }
        for (k, v) in values {
            let pem = String::from_utf8(v).map_err(|_| {
                bad(
                    Kind::ConfigMap,
                    ns,
                    name,
                    &field,
                    format!("{k} is not a PEM certificate (text)"),
                )
            })?;
            // Checked now, so that a bad one is this attempt's failure (retried once the
            // ConfigMap is fixed), not the import's fatal error.
            platter_importer::check_ca_certificate(pem.as_bytes())
                .map_err(|e| bad(Kind::ConfigMap, ns, name, &field, format!("{k}: {e}")))?;
            params
                .ca_certs
                .push((format!("ConfigMap {ns}/{name} key {k}"), pem));
        }
    }
    if let Some(h) = &src.http {
        params.headers.extend(h.extra_headers.iter().cloned());
        for (i, name) in h.secret_extra_headers.iter().enumerate() {
            let field = format!("{at}.secretExtraHeaders[{i}]");
            let s = secret(store, ns, name, &field)?;
            let values = s
                .values()
                .map_err(|e| bad(Kind::Secret, ns, name, &field, e))?;
            for (k, v) in values {
                let header = String::from_utf8(v)
                    .map_err(|_| format!("data.{k} is not text"))
                    .and_then(|h| parse_header(&h).map(|_| h))
                    .map_err(|e| bad(Kind::Secret, ns, name, &field, format!("data.{k}: {e}")))?;
                params.headers.push(header);
            }
        }
    }
    Ok(params)
}

/// The registry credentials of a KubeVirt `imagePullSecret`: a Secret of type
/// `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, a containers auth.json) or the
/// legacy `kubernetes.io/dockercfg` (`.dockercfg`, the `auths` map alone).
pub fn pull_access(
    store: &Store,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<RegistryParams, ObjectError> {
    let s = secret(store, ns, name, field)?;
    let text = |k: &str| s.text(k).map_err(|e| bad(Kind::Secret, ns, name, field, e));
    let json = match (text(".dockerconfigjson")?, text(".dockercfg")?) {
        (Some(j), _) => j,
        (None, Some(legacy)) => format!("{{\"auths\": {legacy}}}"),
        (None, None) => {
            return Err(bad(
                Kind::Secret,
                ns,
                name,
                field,
                "has neither data..dockerconfigjson nor data..dockercfg (make it with kubectl create secret docker-registry)".into(),
            ))
        }
    };
    // Checked now, as a certConfigMap is: a bad one is retried once the Secret is fixed.
    platter_importer::oci::auth_file::AuthFile::parse(json.as_bytes()).map_err(|e| {
        bad(
            Kind::Secret,
            ns,
            name,
            field,
            format!("is not a docker config: {e}"),
        )
    })?;
    Ok(RegistryParams {
        auth_json: Some((format!("{field}: Secret {ns}/{name}"), json)),
        ..RegistryParams::default()
    })
}

fn bad(kind: Kind, ns: &str, name: &str, field: &str, detail: String) -> ObjectError {
    ObjectError::Reference {
        object: format!("{kind} {ns}/{name}"),
        field: field.to_string(),
        detail,
    }
}

fn secret(store: &Store, ns: &str, name: &str, field: &str) -> Result<Secret, ObjectError> {
    match read(store, Kind::Secret, ns, name, field)? {
        Object::Secret(s) => Ok(s),
        _ => Err(bad(Kind::Secret, ns, name, field, "is not a Secret".into())),
    }
}

fn config_map(store: &Store, ns: &str, name: &str, field: &str) -> Result<ConfigMap, ObjectError> {
    match read(store, Kind::ConfigMap, ns, name, field)? {
        Object::ConfigMap(c) => Ok(c),
        _ => Err(bad(
            Kind::ConfigMap,
            ns,
            name,
            field,
            "is not a ConfigMap".into(),
        )),
    }
}

fn read(
    store: &Store,
    kind: Kind,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<Object, ObjectError> {
    get(store, kind, &key(ns, name))?
        .ok_or_else(|| bad(kind, ns, name, field, "does not exist".into()))?
        .typed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use platter_api::parse_documents;

    fn store_with(text: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        crate::objects::apply(&store, "f.yaml", text, false, 1).unwrap();
        (dir, store)
    }

    fn source(yaml: &str) -> DataVolumeSource {
        let doc = format!("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: d}}\nspec:\n  source:\n{yaml}\n  storage: {{resources: {{requests: {{storage: 1Gi}}}}}}\n");
        match parse_documents(&doc).unwrap().remove(0).unwrap().object {
            Object::DataVolume(dv) => dv.spec.source.unwrap(),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn credentials_certificates_and_headers_come_from_the_objects() {
        let (_d, store) = store_with(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\nstringData: {accessKeyId: al, secretKey: 'p:w'}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: h}\nstringData: {b: 'X-B: 2', a: 'X-A: 1'}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: nouser}\nstringData: {secretKey: x}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad-ca}\ndata: {ca.pem: PEM}\n",
        );
        let ca = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca}}\ndata:\n  ca.pem: |\n{}",
            TEST_CA
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        crate::objects::apply(&store, "ca.yaml", &ca, false, 1).unwrap();
        let src = source("    http:\n      url: https://h/x\n      secretRef: c\n      certConfigMap: ca\n      extraHeaders: ['X-0: 0']\n      secretExtraHeaders: [h]");
        let p = source_access(&store, "default", &src, RegistryParams::default()).unwrap();
        assert_eq!(p.creds.as_deref(), Some("al:p:w"));
        assert_eq!(p.ca_certs.len(), 1);
        assert_eq!(p.ca_certs[0].0, "ConfigMap default/ca key ca.pem");
        assert!(p.ca_certs[0].1.starts_with("-----BEGIN CERTIFICATE-----"));
        // Not a certificate: this attempt fails (retried), naming the key.
        let bad = source("    http:\n      url: https://h/x\n      certConfigMap: bad-ca");
        let e = source_access(&store, "default", &bad, RegistryParams::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.source.http.certConfigMap: ConfigMap default/bad-ca ca.pem: "),
            "{e}"
        );
        assert_eq!(e.kind().0, crate::ErrorKind::NotFound);
        assert_eq!(p.headers, ["X-0: 0", "X-A: 1", "X-B: 2"]);

        let src = source("    registry:\n      url: docker://h/x:1\n      secretRef: nouser");
        let e = source_access(&store, "default", &src, RegistryParams::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.source.registry.secretRef: Secret default/nouser has no data.accessKeyId"
        );
        assert_eq!(e.kind().0, crate::ErrorKind::NotFound, "retried, not fatal");
        let e = source_access(&store, "other", &src, RegistryParams::default()).unwrap_err();
        assert!(
            e.to_string().contains("Secret other/nouser does not exist"),
            "{e}"
        );
    }

    /// A throw-away self-signed CA (openssl, prime256v1), valid until 2126.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUWmRdaDuAPGxobJD1SsYCBPeih8wwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcGxhdHRlci11bml0LXRlc3QwIBcNMjYxMjA3MTYxMTM1WhgP
MjEyNjExMTMxNjExMzVaMBwxGjAYBgNVBAMMEXBsYXR0ZXItdW5pdC10ZXN0MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpxlYyKzIxWVxzHgPmlMzFuGZKrn+pl8a
1PoYE9frj+m0VAqMyZS1JUONHNqebgonMLlowFl8GuCkgDUFEm9Pv6NTMFEwHQYD
VR0OBBYEFGSVWettjI2ESyiGjq6Iic4H/30CMB8GA1UdIwQYMBaAFGSVWettjI2E
SyiGjq6Iic4H/30CMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg
FxJFR5RMDUKG0kVICED8qY1OrHrXBOfo5oIZrkYgRbwCIQDbUHxfw9eWrdemLrGa
Vn8bTQAxrwMaehCQjbukSbJt+Q==
-----END CERTIFICATE-----
";

    #[test]
    fn a_pull_secret_is_an_auth_file_in_either_docker_shape() {
        let (_d, store) = store_with(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: new}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '{\"auths\": {\"r:5000\": {\"username\": \"u\", \"password\": \"p\"}}}'}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: old}\ntype: kubernetes.io/dockercfg\nstringData: {.dockercfg: '{\"r:5000\": {\"auth\": \"dTpw\"}}'}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: opaque}\nstringData: {x: z}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: junk}\nstringData: {.dockerconfigjson: nojson}\n",
        );
        for name in ["new", "old"] {
            let p = pull_access(&store, "default", name, "f").unwrap();
            let (opts, _) = crate::transfer::registry_options(&p).unwrap();
            let auth = opts.auth.unwrap();
            let creds = format!("{:?}", auth.lookup("r:5000", "repo"));
            assert_eq!(creds, "Some(Basic(u:***))", "{name}");
        }
        let e = pull_access(&store, "default", "junk", "f").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f: Secret default/junk is not a docker config"),
            "{e}"
        );
        assert_eq!(e.kind().0, crate::ErrorKind::NotFound, "retried, not fatal");
        let at = "volumes[root].containerDisk.imagePullSecret";
        let e = pull_access(&store, "default", "opaque", at).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "{at}: Secret default/opaque has neither data..dockerconfigjson"
            )),
            "{e}"
        );
    }
}
