//! The admin kubeconfig: the cluster's CA and an admin client certificate, embedded.

use base64::Engine as _;

use super::yaml::{self, SeqIndent, Yaml};

/// The PEM texts a kubeconfig embeds.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub ca_cert_pem: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
}

/// A kubeconfig for `user` on the cluster `cluster_name` at `server_url`
/// (`https://host:6443`), its one context current. The caller checks the values.
pub fn render(cluster_name: &str, server_url: &str, user: &str, creds: Credentials<'_>) -> String {
    let b64 = |s: &str| Yaml::str(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
    let context = format!("{user}@{cluster_name}");
    let doc = Yaml::map([
        ("apiVersion", Yaml::str("v1")),
        ("kind", Yaml::str("Config")),
        (
            "clusters",
            Yaml::Seq(vec![Yaml::map([
                ("name", Yaml::quoted(cluster_name)),
                (
                    "cluster",
                    Yaml::map([
                        ("certificate-authority-data", b64(creds.ca_cert_pem)),
                        ("server", Yaml::quoted(server_url)),
                    ]),
                ),
            ])]),
        ),
        (
            "contexts",
            Yaml::Seq(vec![Yaml::map([
                ("name", Yaml::quoted(context.as_str())),
                (
                    "context",
                    Yaml::map([
                        ("cluster", Yaml::quoted(cluster_name)),
                        ("user", Yaml::str(user)),
                    ]),
                ),
            ])]),
        ),
        ("current-context", Yaml::quoted(context.as_str())),
        ("preferences", Yaml::empty_map()),
        (
            "users",
            Yaml::Seq(vec![Yaml::map([
                ("name", Yaml::str(user)),
                (
                    "user",
                    Yaml::map([
                        ("client-certificate-data", b64(creds.client_cert_pem)),
                        ("client-key-data", b64(creds.client_key_pem)),
                    ]),
                ),
            ])]),
        ),
    ]);
    yaml::write(&doc, SeqIndent::Flush)
}
