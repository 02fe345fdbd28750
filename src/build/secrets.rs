//! Phase 2 of a build: the cluster's secrets (CA, bootstrap token, admin credentials, every
//! node's host key), made on the first build and read back after, the token renewed when a
//! reimage would otherwise carry one the cluster has forgotten; the cluster's recorded state;
//! the admin kubeconfig and known_hosts beside them.

use super::{state, BuildError, BuildOptions, BuildReport, Validated};
use crate::pki;
use crate::spec::{self, Spec};

/// Phase 2: the cluster's secrets, made on the first build and read back after; and the
/// admin kubeconfig beside them.
pub(super) fn ensure(
    v: &Validated,
    opts: &BuildOptions,
    report: &mut BuildReport,
) -> Result<pki::Secrets, BuildError> {
    let mut secrets = pki::ensure_secrets(&v.spec.spec_dir.join("secrets"), &options(v, opts))?;
    // Every node of the spec gets its host key now (not only those built), so known_hosts
    // lists the whole cluster.
    secrets.host_keys =
        pki::ensure_host_keys(&secrets.dir, &node_names(&v.spec), pki::HostKeyMode::Store)?;
    report.known_hosts =
        pki::write_known_hosts(&secrets.dir, &known_host_names(&v.spec), &secrets.host_keys)?;
    if needs_new_token(v, opts, &secrets) {
        let ttl = spec::GoDuration::from_secs(token_ttl_secs(&v.spec).unwrap_or(0));
        report.token_renewed = Some(secrets.renew_token(opts.now, &ttl.to_string())?);
    }
    report.warnings.extend(secrets.warnings.iter().cloned());
    if opts.token.is_none() && report.token_renewed.is_none() {
        report
            .warnings
            .extend(secrets.token_age_warning(opts.now, token_ttl_secs(&v.spec)));
    }
    // The first build records which node runs `kubeadm init`, and every build the nodes it
    // made cards for (see `state::next`).
    let dir = v.spec.spec_dir.join("secrets");
    if let Some(next) = state::next(
        v.state.as_ref(),
        &v.spec.name,
        opts.epoch,
        v.init_node.as_deref(),
        &v.nodes,
        !opts.nodes.is_empty(),
        opts.new_cluster,
    ) {
        state::save(&dir, &next)?;
    }
    report.admin_kubeconfig = pki::write_admin_kubeconfig(
        &secrets,
        &v.spec.name,
        &format!("https://{}", v.spec.control_plane_endpoint()),
    )?;
    Ok(secrets)
}

/// Whether this build makes cards that join a running cluster (`--node`, a node other than
/// the one that runs `kubeadm init` now) with no `--token`, while the recorded token is older
/// than its ttl: the cluster has forgotten it, so the build makes a new one
/// ([`pki::Secrets::renew_token`]) instead of cards that could never join.
pub(super) fn needs_new_token(v: &Validated, opts: &BuildOptions, secrets: &pki::Secrets) -> bool {
    opts.token.is_none()
        && !opts.nodes.is_empty()
        && v.nodes.iter().any(|n| Some(n) != v.init_node.as_ref())
        && secrets.token_expired(opts.now, token_ttl_secs(&v.spec))
}

pub(super) fn node_names(spec: &Spec) -> Vec<&str> {
    spec.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// `(name, fixed address)` of every node, for known_hosts.
fn known_host_names(spec: &Spec) -> Vec<(&str, Option<String>)> {
    spec.nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address.map(|a| a.addr.to_string())))
        .collect()
}

pub(super) fn options(v: &Validated, opts: &BuildOptions) -> pki::SecretsOptions {
    pki::SecretsOptions {
        build_epoch: opts.epoch,
        token_ttl_secs: token_ttl_secs(&v.spec),
    }
}

pub(super) fn token_ttl_secs(spec: &Spec) -> Option<u64> {
    let ttl = spec.kubernetes.token_ttl_duration().as_secs();
    (ttl > 0).then_some(ttl)
}
