//! Oracles: a YAML parser for the configs, `sh -n`, `shellcheck` and a real run under dash
//! with stand-in kubeadm/kubectl for the script, `systemd-analyze verify` for the unit.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use super::cloud_init::merge_profile;
use super::first_boot::*;
use super::kubeadm::*;
use crate::spec::{GoDuration, Token};

/// The shell functions of the first-boot script (from `say` to the main part), to run alone.
fn functions() -> &'static str {
    let t = SCRIPT_TEMPLATE;
    let start = t.find("say() {").unwrap();
    let end = t.find("\nmkdir -p \"$STATE\"").unwrap();
    assert!(
        !t[start..end].contains("{{"),
        "the functions hold no placeholder"
    );
    &t[start..end]
}

const TOKEN: &str = "abcdef.0123456789abcdef";

fn cluster() -> ClusterParams {
    ClusterParams {
        cluster_name: "pis".into(),
        kubernetes_version: "1.34.2".into(),
        control_plane_endpoint: "192.168.1.10:6443".into(),
        pod_subnet: "10.42.0.0/16".parse().unwrap(),
        service_subnet: "10.96.0.0/12".parse().unwrap(),
        token: Token::parse(TOKEN).unwrap(),
        token_ttl: GoDuration::from_secs(86_400),
        ca_cert_hash: format!("sha256:{}", "ab".repeat(32)),
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
        cni: Cni::Flannel,
        etcd_image: Some(ImageMeta {
            repository: None,
            tag: "3.6.10-0".into(),
        }),
        coredns_image: Some(ImageMeta {
            repository: None,
            tag: "v1.12.1".into(),
        }),
    }
}

fn node(name: &str, role: Role, addr: Option<&str>) -> NodeParams {
    NodeParams {
        name: name.into(),
        role,
        advertise_address: addr.map(str::to_string),
    }
}

fn docs(text: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn kinds(d: &[Yaml]) -> Vec<&str> {
    d.iter().map(|y| y["kind"].as_str().unwrap()).collect()
}

#[test]
fn first_control_plane_config() {
    let text = render_config(
        &cluster(),
        &node("cp1", Role::InitControlPlane, Some("192.168.1.10")),
    );
    let d = docs(&text);
    assert_eq!(
        kinds(&d),
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    let init = &d[0];
    assert_eq!(init["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    let bt = &init["bootstrapTokens"][0];
    assert_eq!(bt["token"].as_str(), Some(TOKEN));
    assert_eq!(bt["ttl"].as_str(), Some("24h0m0s"));
    assert_eq!(
        bt["usages"],
        Yaml::Array(vec![
            Yaml::from_str("signing"),
            Yaml::from_str("authentication")
        ])
    );
    assert_eq!(
        bt["groups"][0].as_str(),
        Some("system:bootstrappers:kubeadm:default-node-token")
    );
    assert_eq!(init["nodeRegistration"]["name"].as_str(), Some("cp1"));
    assert_eq!(
        init["nodeRegistration"]["criSocket"].as_str(),
        Some("unix:///run/containerd/containerd.sock")
    );
    assert_eq!(
        init["localAPIEndpoint"]["advertiseAddress"].as_str(),
        Some("192.168.1.10")
    );

    let cc = &d[1];
    assert_eq!(cc["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    assert_eq!(cc["kubernetesVersion"].as_str(), Some("v1.34.2"));
    assert_eq!(
        cc["controlPlaneEndpoint"].as_str(),
        Some("192.168.1.10:6443")
    );
    assert_eq!(cc["clusterName"].as_str(), Some("pis"));
    assert_eq!(cc["networking"]["podSubnet"].as_str(), Some("10.42.0.0/16"));
    assert_eq!(
        cc["networking"]["serviceSubnet"].as_str(),
        Some("10.96.0.0/12")
    );
    // etcd's and CoreDNS's tags are the card's, not the kubeadm binary's defaults; no
    // repository of their own at kubeadm's default place.
    assert_eq!(cc["etcd"]["local"]["imageTag"].as_str(), Some("3.6.10-0"));
    assert!(cc["etcd"]["local"]["imageRepository"].is_badvalue());
    assert_eq!(cc["dns"]["imageTag"].as_str(), Some("v1.12.1"));
    assert!(cc["dns"]["imageRepository"].is_badvalue());
    // Elsewhere, the repository too; none at all leaves both to kubeadm.
    let mut c = cluster();
    c.etcd_image = Some(ImageMeta {
        repository: Some("registry.lan/k8s".into()),
        tag: "3.6.11-0".into(),
    });
    c.coredns_image = None;
    let cc = &docs(&render_config(
        &c,
        &node("cp1", Role::InitControlPlane, None),
    ))[1];
    assert_eq!(
        cc["etcd"]["local"]["imageRepository"].as_str(),
        Some("registry.lan/k8s")
    );
    assert_eq!(cc["etcd"]["local"]["imageTag"].as_str(), Some("3.6.11-0"));
    assert!(cc["dns"].is_badvalue());
    // Joining nodes take the ClusterConfiguration from the cluster: theirs names no image.
    for role in [Role::JoinControlPlane, Role::Worker] {
        let text = render_config(&cluster(), &node("n", role, None));
        assert!(!text.contains("imageTag"), "{text}");
    }

    let kubelet = &d[2];
    assert_eq!(
        kubelet["apiVersion"].as_str(),
        Some("kubelet.config.k8s.io/v1beta1")
    );
    assert_eq!(kubelet["cgroupDriver"].as_str(), Some("systemd"));
    assert_eq!(kubelet["failSwapOn"].as_bool(), Some(true));

    // Without a known address kubeadm picks one; the field is left out.
    let text = render_config(&cluster(), &node("cp1", Role::InitControlPlane, None));
    assert!(docs(&text)[0]["localAPIEndpoint"].is_badvalue());
    // A leading v in the version is not doubled.
    let mut c = cluster();
    c.kubernetes_version = "v1.34.2".into();
    let text = render_config(&c, &node("cp1", Role::InitControlPlane, None));
    assert_eq!(
        docs(&text)[1]["kubernetesVersion"].as_str(),
        Some("v1.34.2")
    );
}

#[test]
fn worker_config() {
    let text = render_config(&cluster(), &node("w1", Role::Worker, Some("192.168.1.20")));
    let d = docs(&text);
    assert_eq!(kinds(&d), ["JoinConfiguration"]);
    let j = &d[0];
    assert_eq!(j["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    let bt = &j["discovery"]["bootstrapToken"];
    assert_eq!(bt["apiServerEndpoint"].as_str(), Some("192.168.1.10:6443"));
    assert_eq!(bt["token"].as_str(), Some(TOKEN));
    assert_eq!(
        bt["caCertHashes"][0].as_str(),
        Some(cluster().ca_cert_hash.as_str())
    );
    assert_eq!(bt["caCertHashes"].as_vec().unwrap().len(), 1);
    assert_eq!(j["nodeRegistration"]["name"].as_str(), Some("w1"));
    assert_eq!(
        j["nodeRegistration"]["criSocket"].as_str(),
        Some("unix:///run/containerd/containerd.sock")
    );
    assert!(j["controlPlane"].is_badvalue());
    assert!(!text.contains("KubeletConfiguration"));
}

#[test]
fn joining_control_plane_config() {
    let text = render_config(
        &cluster(),
        &node("cp2", Role::JoinControlPlane, Some("192.168.1.11")),
    );
    let d = docs(&text);
    assert_eq!(kinds(&d), ["JoinConfiguration"]);
    assert_eq!(
        d[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"].as_str(),
        Some("192.168.1.11")
    );
    assert!(text.contains("/etc/kubernetes/pki"), "{text}");
    let text = render_config(&cluster(), &node("cp2", Role::JoinControlPlane, None));
    let d = docs(&text);
    assert!(d[0]["controlPlane"].as_hash().unwrap().is_empty());
    assert_eq!(
        d[0]["discovery"]["bootstrapToken"]["token"].as_str(),
        Some(TOKEN)
    );
}

#[test]
fn values_cannot_inject_yaml() {
    let mut c = cluster();
    c.cluster_name = "a\"b: c\n- d\\".into();
    let text = render_config(&c, &node("x: y #z", Role::InitControlPlane, None));
    let d = docs(&text);
    assert_eq!(d[1]["clusterName"].as_str(), Some(c.cluster_name.as_str()));
    assert_eq!(d[0]["nodeRegistration"]["name"].as_str(), Some("x: y #z"));
}

#[test]
fn validate_catches_bad_values() {
    assert_eq!(cluster().validate(), Ok(()));
    type Edit = fn(&mut ClusterParams);
    let cases: [(&str, Edit); 5] = [
        ("CA certificate hash", |c| {
            c.ca_cert_hash = "sha256:xyz".into()
        }),
        ("Kubernetes version", |c| {
            c.kubernetes_version = "1.34".into()
        }),
        ("CRI socket", |c| {
            c.cri_socket = "/run/containerd/containerd.sock".into()
        }),
        ("control-plane endpoint", |c| {
            c.control_plane_endpoint = "192.168.1.10".into()
        }),
        ("cluster name", |c| c.cluster_name = "my cluster".into()),
    ];
    for (what, edit) in cases {
        let mut c = cluster();
        edit(&mut c);
        match c.validate() {
            Err(KubeadmError::Invalid { what: w, value, .. }) => {
                assert_eq!(w, what);
                assert!(!value.contains(TOKEN));
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The token and its ttl are typed: a bad one cannot reach the renderer, and the error
    // does not repeat the token.
    let err = Token::parse("ABCDEF.0123456789abcdef").unwrap_err();
    assert!(!err.to_string().contains("ABCDEF"));
    assert!(Token::parse("abc.def").is_err());
    assert!(GoDuration::parse("24 hours").is_none());
    assert!("".parse::<crate::spec::Cidr>().is_err());
}

/// The ttl as kubeadm writes it (Go's `Duration.String`), read back by the one grammar.
#[test]
fn go_durations() {
    for (secs, want) in [
        (0, "0s"),
        (45, "45s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (86_399, "23h59m59s"),
        (86_400, "24h0m0s"),
        (7 * 86_400, "168h0m0s"),
    ] {
        assert_eq!(GoDuration::from_secs(secs).to_string(), want);
        assert_eq!(
            GoDuration::parse(want),
            Some(GoDuration::from_secs(secs)),
            "{want}"
        );
    }
    for bad in ["", "h", "24", "24x", "-1h", "24h 0m"] {
        assert!(GoDuration::parse(bad).is_none(), "{bad}");
    }
    assert!(GoDuration::parse("90m").is_some());
}

#[test]
fn profile_merge_appends_lists_and_overrides_scalars() {
    use serde_json::{json, Value};
    let mut base = json!({"hostname": "a", "runcmd": [["echo", "1"]], "users": [{"name": "pi"}], "ntp": {"enabled": true}});
    let profile = json!({"hostname": "b", "runcmd": [["echo", "2"]], "ntp": {"servers": ["x"]}, "packages": ["htop"]});
    if let (Value::Object(b), Value::Object(p)) = (&mut base, &profile) {
        merge_profile(b, p);
    }
    assert_eq!(base["hostname"], "b");
    assert_eq!(base["runcmd"], json!([["echo", "1"], ["echo", "2"]]));
    assert_eq!(base["ntp"], json!({"enabled": true, "servers": ["x"]}));
    assert_eq!(base["packages"], json!(["htop"]));
}

/// The net-conf.json part of the upstream kube-flannel.yml (also the snapshots' manifest).
pub(super) const FLANNEL: &str = r#"kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
data:
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
"#;

#[test]
fn flannel_gets_the_pod_subnet() {
    let cidr = |s: &str| s.parse::<crate::spec::Cidr>().unwrap();
    let out = patch_flannel(FLANNEL, cidr("10.42.0.0/16")).unwrap();
    assert!(out.contains(r#""Network": "10.42.0.0/16","#), "{out}");
    assert!(!out.contains("10.244.0.0/16"));
    assert_eq!(out.len(), FLANNEL.len() - 1);
    // The result is still YAML with JSON inside.
    let cm = &docs(&out)[0];
    assert!(cm["data"]["net-conf.json"]
        .as_str()
        .unwrap()
        .contains("10.42.0.0/16"));
    assert_eq!(
        patch_flannel(FLANNEL, cidr("10.244.0.0/16")).unwrap(),
        FLANNEL
    );
    assert_eq!(
        patch_flannel("kind: ConfigMap\n", cidr("10.42.0.0/16")),
        Err(KubeadmError::FlannelNetworkNotFound)
    );
    // The subnet is a typed Cidr: text that would break out of the JSON cannot become one.
    assert!("10.42.0.0/16\", \"x".parse::<crate::spec::Cidr>().is_err());
}

fn all_scripts() -> Vec<(Role, Cni, String)> {
    let mut out = Vec::new();
    for role in [Role::InitControlPlane, Role::JoinControlPlane, Role::Worker] {
        for cni in [Cni::Flannel, Cni::None] {
            out.push((role, cni, first_boot_script(role, cni)));
        }
    }
    out
}

#[test]
fn script_is_valid_posix_sh_and_holds_no_secret() {
    for (role, cni, script) in all_scripts() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kubeadm-first-boot");
        fs::write(&path, &script).unwrap();
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{role:?} {cni:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        // shellcheck is an oracle the tests need (tests/install-deps.sh installs it).
        let out = Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(&path)
            .output()
            .expect("shellcheck is installed (tests/install-deps.sh)");
        assert!(
            out.status.success(),
            "{role:?} {cni:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(script.contains("\nset -eu\n"));
        // The token lives only in kubeadm.yaml: the script has no copy and no variable for it.
        assert!(!script.contains(TOKEN));
        assert!(!script.contains("TOKEN"), "{role:?}");
        assert!(!script.contains("$token"));
        let functions = functions();
        let status_fn = &functions[functions.find("status() {").unwrap()..];
        let status_fn = &status_fn[..status_fn.find("\n}\n").unwrap()];
        assert!(!status_fn.contains("CONFIG") && !status_fn.contains("kubeadm.yaml"));
        assert!(
            !status_fn.contains("RUN/output"),
            "raw output must not reach the boot partition"
        );
    }
    let init = first_boot_script(Role::InitControlPlane, Cni::Flannel);
    assert!(init.contains(r#"kubeadm init --config "$CONFIG" --skip-token-print"#));
    assert!(init.contains("CNI=flannel"));
    assert!(first_boot_script(Role::InitControlPlane, Cni::None).contains("CNI=none"));
    // Only the first control plane applies the CNI.
    assert!(first_boot_script(Role::Worker, Cni::Flannel).contains("CNI=none"));
    assert!(first_boot_script(Role::Worker, Cni::Flannel)
        .contains(r#"kubeadm join --config "$CONFIG""#));
}

#[test]
fn redact_drops_join_commands_and_masks_tokens() {
    let kubeadm_output = "\
[bootstrap-token] Using token: abcdef.0123456789abcdef
Then you can join any number of worker nodes by running the following on each as root:

kubeadm join 192.168.1.10:6443 --token abcdef.0123456789abcdef \\
\t--discovery-token-ca-cert-hash sha256:0123
error execution phase preflight: couldn't validate the identity of the API Server
";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{}\nredact", functions()))
        .stdin_bytes(kubeadm_output)
        .unwrap();
    assert!(!out.contains("0123456789abcdef"), "{out}");
    assert!(!out.contains("--discovery-token"), "{out}");
    for needle in [
        "[bootstrap-token] Using token: <token>",
        "error execution phase preflight",
        "join any number of worker nodes",
    ] {
        assert!(out.contains(needle), "{needle:?}: {out}");
    }
}

trait StdinBytes {
    fn stdin_bytes(&mut self, input: &str) -> std::io::Result<String>;
}

impl StdinBytes for Command {
    fn stdin_bytes(&mut self, input: &str) -> std::io::Result<String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        assert!(out.status.success());
        Ok(String::from_utf8(out.stdout).unwrap())
    }
}

#[test]
fn unit_has_the_right_shape_and_systemd_accepts_it() {
    let unit = first_boot_unit();
    for line in [
        "After=network-online.target containerd.service",
        "Wants=network-online.target",
        "Requires=containerd.service",
        "ConditionPathExists=|!/etc/kubernetes/kubelet.conf",
        "ExecStart=/usr/local/lib/piforge/kubeadm-first-boot",
        "After=time-sync.target",
        "Wants=time-sync.target",
        "After=piforge-packages.service",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    assert!(unit.contains(&format!("ExecStart={FIRST_BOOT_SCRIPT_PATH}\n")));

    // verify wants ExecStart to exist and Requires= to resolve: point ExecStart at a copy of
    // the script and put a stand-in containerd.service beside the unit.
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("kubeadm-first-boot");
    fs::write(&script, first_boot_script(Role::Worker, Cni::None)).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        tmp.path().join("containerd.service"),
        "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let verify = |text: &str| {
        let path = tmp.path().join(FIRST_BOOT_UNIT_NAME);
        fs::write(
            &path,
            text.replace(FIRST_BOOT_SCRIPT_PATH, script.to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = verify(unit);
    assert!(ok && err.trim().is_empty(), "systemd-analyze verify: {err}");
    // The oracle does refuse what systemd refuses.
    let (ok, err) = verify(
        &unit
            .replace("Type=exec", "Type=oneshot")
            .replace("Restart=on-failure", "Restart=always"),
    );
    assert!(!ok, "{err}");
}

/// A node's root, with stand-in kubeadm, kubectl and sleep first on the script's PATH.
struct FakeNode {
    tmp: tempfile::TempDir,
    _containerd: std::os::unix::net::UnixListener,
}

const FAKE_KUBEADM: &str = r#"#!/bin/sh
R=$PIFORGE_ROOT
echo "$*" >>"$R/calls"
case "$1" in
kubeconfig)
    # kubeadm kubeconfig user: the CA must be on the card (certificatesDir of --config).
    dir=$(sed -n 's/^certificatesDir: "\(.*\)"$/\1/p' "$4")
    if [ ! -f "$dir/ca.key" ]; then
        echo "error: failure loading ca certificate authority from $dir" >&2
        exit 1
    fi
    cp "$4" "$R/rejoin-kubeadm-config"
    printf 'apiVersion: v1\nkind: Config\nusers:\n- name: piforge-rejoin\n  user:\n    client-key-data: FAKEPRIVATEKEY\n'
    ;;
reset)
    rm -rf "$R/etc/kubernetes/pki" "$R/etc/kubernetes/kubelet.conf" "$R/etc/kubernetes/admin.conf"
    rm -rf "$R/etc/kubernetes/manifests"
    echo "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /etc/kubernetes/pki]"
    ;;
init|join)
    n=$(cat "$R/count" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >"$R/count"
    cp "$R/boot/firmware/piforge-status.txt" "$R/status-during-$n"
    if [ -f "$R/etc/kubernetes/manifests/kube-vip.yaml" ]; then
        grep -o 'path: /etc/kubernetes/[a-z-]*\.conf' "$R/etc/kubernetes/manifests/kube-vip.yaml" \
            >"$R/kube-vip-during-$n"
    fi
    if [ "$1" = init ] && [ ! -f "$R/etc/kubernetes/pki/ca.key" ]; then
        echo "error: the pre-placed CA is gone"
        exit 3
    fi
    mkdir -p "$R/etc/kubernetes/pki"
    echo made >"$R/etc/kubernetes/pki/apiserver.crt"
    echo "[bootstrap-token] Using token: abcdef.0123456789abcdef"
    if [ "$n" -le "$FAIL_TIMES" ]; then
        echo "error execution phase preflight: [preflight] Some fatal errors occurred:"
        echo "	[ERROR Port-6443]: Port 6443 is in use"
        exit 1
    fi
    : >"$R/etc/kubernetes/kubelet.conf"
    : >"$R/etc/kubernetes/admin.conf"
    echo "kubeadm join 192.168.1.10:6443 --token abcdef.0123456789abcdef \\"
    echo "	--discovery-token-ca-cert-hash sha256:0123"
    ;;
esac
"#;

/// The stand-in kubectl: `apply` fails once, then succeeds (the CNI step); with `--server`
/// it is the reimage cleanup's API server, answering from the fake cluster in `$R/cluster`
/// (`down-HOST:PORT` refuses, `node-NAME` holds its Ready status, `etcd-pods` the etcd pods,
/// `exec ... -- etcdctl` runs the stand-in etcdctl, as the etcd pod would).
const FAKE_KUBECTL: &str = r#"#!/bin/sh
R=$PIFORGE_ROOT
C=$R/cluster
printf '%s\n' "$*" >>"$R/kubectl-calls"
server=
conf=
while :; do
    case $1 in
    --kubeconfig) conf=$2; shift 2 ;;
    --server) server=${2#https://}; shift 2 ;;
    --request-timeout) shift 2 ;;
    *) break ;;
    esac
done
if [ -z "$server" ]; then
    if [ ! -f "$R/kubectl-failed" ]; then
        : >"$R/kubectl-failed"
        echo "error: unable to recognize: no matches for kind DaemonSet"
        exit 1
    fi
    echo "daemonset.apps/kube-flannel-ds created"
    exit 0
fi
if [ -e "$C/down-$server" ]; then
    echo "The connection to the server $server was refused - did you specify the right host or port?" >&2
    exit 1
fi
grep -q FAKEPRIVATEKEY "$conf" || { echo "error: You must be logged in to the server (Unauthorized)" >&2; exit 1; }
case "$1 $2" in
"get node")
    cat "$C/node-$3" 2>/dev/null
    ;;
"get pods")
    cat "$C/etcd-pods"
    ;;
"delete node")
    rm -f "$C/node-$3"
    echo "node \"$3\" deleted"
    ;;
"exec -n")
    pod=$4
    shift 5
    [ "$1" = etcdctl ] || exit 1
    shift
    POD=$pod sh "$R/fake/etcdctl" "$@"
    ;;
*)
    echo "error: unexpected call $*" >&2
    exit 1
    ;;
esac
"#;

/// The stand-in etcdctl inside an etcd pod: the member list is `$R/cluster/members`, the
/// client URLs that answer are in `healthy`, `no-quorum` makes a removal fail.
const FAKE_ETCDCTL: &str = r#"#!/bin/sh
C=$PIFORGE_ROOT/cluster
echo "$POD $*" >>"$PIFORGE_ROOT/etcdctl-calls"
endpoint=$2
while :; do
    case $1 in
    --*) shift 2 ;;
    *) break ;;
    esac
done
case "$1 $2" in
"member list")
    cat "$C/members"
    ;;
"member remove")
    if [ -e "$C/no-quorum" ]; then
        echo "Error: etcdserver: unhealthy cluster" >&2
        exit 1
    fi
    grep -v "^$3, " "$C/members" >"$C/members.tmp"
    mv "$C/members.tmp" "$C/members"
    echo "Member $3 removed from cluster 1c2d3e4f5a6b7c8d"
    ;;
"endpoint health")
    grep -qx "$endpoint" "$C/healthy" 2>/dev/null
    ;;
*)
    exit 1
    ;;
esac
"#;

/// Records the delay; refuses after 20 sleeps so a script that never succeeds ends.
const FAKE_SLEEP: &str = r#"#!/bin/sh
echo "$1" >>"$PIFORGE_ROOT/sleeps"
[ "$(wc -l <"$PIFORGE_ROOT/sleeps")" -le 20 ]
"#;

impl FakeNode {
    fn new(role: Role, cni: Cni) -> FakeNode {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let write = |rel: &str, text: &str, mode: u32| {
            let p = r.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        write("usr/local/bin/kubeadm", FAKE_KUBEADM, 0o755);
        write("usr/local/bin/kubectl", FAKE_KUBECTL, 0o755);
        write("usr/local/bin/sleep", FAKE_SLEEP, 0o755);
        write("fake/etcdctl", FAKE_ETCDCTL, 0o755);
        write(
            "usr/local/lib/piforge/kubeadm-first-boot",
            &first_boot_script(role, cni),
            0o755,
        );
        let node = node("n1", role, None);
        write(
            "etc/piforge/kubeadm.yaml",
            &render_config(&cluster(), &node),
            0o600,
        );
        write("usr/local/share/piforge/kube-flannel.yml", FLANNEL, 0o644);
        write(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
            0o644,
        );
        if role.is_control_plane() {
            write("etc/kubernetes/pki/ca.crt", "CA CERT\n", 0o644);
            write("etc/kubernetes/pki/ca.key", "CA KEY\n", 0o600);
        }
        // The clock is synchronized (see `waits_for_the_clock_then_goes_on_with_a_warning`).
        write("run/systemd/timesync/synchronized", "", 0o644);
        fs::create_dir_all(r.join("boot/firmware")).unwrap();
        fs::create_dir_all(r.join("run/containerd")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(r.join("run/containerd/containerd.sock"))
            .unwrap();
        FakeNode {
            tmp,
            _containerd: sock,
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Runs the script with kubeadm failing `fail_times` times; returns (success, journal).
    fn run(&self, fail_times: u32) -> (bool, String) {
        let out = Command::new("timeout")
            .arg("60")
            .arg("sh")
            .arg(self.root().join("usr/local/lib/piforge/kubeadm-first-boot"))
            .env("PIFORGE_ROOT", self.root())
            .env("FAIL_TIMES", fail_times.to_string())
            .output()
            .unwrap();
        let journal = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), journal)
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap_or_default()
    }

    fn exists(&self, rel: &str) -> bool {
        self.root().join(rel).exists()
    }
}

#[test]
fn first_control_plane_retries_then_applies_flannel() {
    let n = FakeNode::new(Role::InitControlPlane, Cni::Flannel);
    let (ok, journal) = n.run(2);
    assert!(ok, "{journal}");
    let r = n.root().display().to_string();
    let init = format!("init --config {r}/etc/piforge/kubeadm.yaml --skip-token-print");
    assert_eq!(
        n.read("calls").lines().collect::<Vec<_>>(),
        [
            init.as_str(),
            "reset --force",
            &init,
            "reset --force",
            &init
        ]
    );
    // Backoff 10, 20 for kubeadm; 10 again for the one failed kubectl.
    assert_eq!(
        n.read("sleeps").split_whitespace().collect::<Vec<_>>(),
        ["10", "20", "10"]
    );
    let apply = format!(
        "--kubeconfig {r}/etc/kubernetes/admin.conf apply -f {r}/usr/local/share/piforge/kube-flannel.yml"
    );
    assert_eq!(
        n.read("kubectl-calls").lines().collect::<Vec<_>>(),
        [&apply, &apply]
    );
    // The CA survived both resets, and the spare copy is gone once done.
    assert_eq!(n.read("etc/kubernetes/pki/ca.key"), "CA KEY\n");
    assert!(!n.exists("var/lib/piforge/pki"));
    assert!(!n.exists("var/lib/piforge/kubeadm-started"));
    assert!(!n.exists("var/lib/piforge/cni-pending"));

    // What the status file said while the second attempt ran.
    let during = n.read("status-during-2");
    for needle in [
        "phase: kubeadm-init\n",
        "attempt: 2\n",
        "last error: [ERROR Port-6443]: Port 6443 is in use",
    ] {
        assert!(during.contains(needle), "{needle:?}: {during}");
    }
    let status = n.read("boot/firmware/piforge-status.txt");
    for needle in [
        "phase: done\n",
        "last error: none\n",
        "cgroup controllers: cpuset cpu io memory pids\n",
        "(init-control-plane)",
    ] {
        assert!(status.contains(needle), "{needle:?}: {status}");
    }
    assert!(
        status.lines().any(|l| l.starts_with("time: 20")),
        "{status}"
    );
    assert!(!status.contains("warning"), "{status}");
    for text in [&journal, &status, &during] {
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("--discovery-token"), "{text}");
    }
    assert!(
        journal.contains("[bootstrap-token] Using token: <token>"),
        "{journal}"
    );
    assert!(
        journal.contains("daemonset.apps/kube-flannel-ds created"),
        "{journal}"
    );
    // Only the status file was written to the boot partition.
    assert_eq!(
        fs::read_dir(n.root().join("boot/firmware"))
            .unwrap()
            .count(),
        1
    );

    // Next boot: the unit's condition would skip it; run by hand it does nothing.
    let (ok, journal) = n.run(0);
    assert!(ok && journal.contains("already in a cluster"), "{journal}");
    assert_eq!(n.read("calls").lines().count(), 5);
}

#[test]
fn worker_joins_without_cni_and_warns_about_missing_memory_cgroup() {
    let n = FakeNode::new(Role::Worker, Cni::Flannel);
    fs::write(
        n.root().join("sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io pids\n",
    )
    .unwrap();
    let (ok, journal) = n.run(1);
    assert!(ok, "{journal}");
    let r = n.root().display().to_string();
    let join = format!("join --config {r}/etc/piforge/kubeadm.yaml");
    assert_eq!(
        n.read("calls").lines().collect::<Vec<_>>(),
        [join.as_str(), "reset --force", &join]
    );
    assert!(!n.exists("kubectl-calls"));
    let status = n.read("boot/firmware/piforge-status.txt");
    assert!(
        status.contains("phase: done\n") && status.contains("(worker)"),
        "{status}"
    );
    assert!(
        status.contains("warning: no memory controller: add cgroup_enable=memory"),
        "{status}"
    );
    assert!(n.read("status-during-1").contains("phase: kubeadm-join\n"));
}

#[test]
fn attempt_cut_short_by_a_reboot_is_cleaned_up_first() {
    let n = FakeNode::new(Role::InitControlPlane, Cni::None);
    let (ok, journal) = n.run(1_000);
    assert!(!ok, "the stand-in sleep gives up after 20 waits: {journal}");
    // The "reboot": kubeadm is half done, the markers and the CA copy are still there.
    assert!(n.exists("var/lib/piforge/kubeadm-started"));
    assert!(n.exists("var/lib/piforge/pki/ca.key"));
    fs::remove_file(n.root().join("calls")).unwrap();
    fs::remove_file(n.root().join("sleeps")).unwrap();
    fs::remove_file(n.root().join("count")).unwrap();
    fs::write(n.root().join("etc/kubernetes/kubelet.conf"), "").unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    let calls = n.read("calls");
    assert!(calls.starts_with("reset --force\ninit "), "{calls}");
    assert_eq!(n.read("etc/kubernetes/pki/ca.key"), "CA KEY\n");
    assert!(!n.exists("kubectl-calls"), "no CNI was asked for");
    assert!(n
        .read("boot/firmware/piforge-status.txt")
        .contains("phase: done\n"));
}

#[test]
fn pending_cni_is_finished_on_the_next_boot() {
    let n = FakeNode::new(Role::InitControlPlane, Cni::Flannel);
    fs::create_dir_all(n.root().join("var/lib/piforge")).unwrap();
    fs::write(n.root().join("var/lib/piforge/cni-pending"), "").unwrap();
    fs::write(n.root().join("etc/kubernetes/kubelet.conf"), "").unwrap();
    fs::write(n.root().join("etc/kubernetes/admin.conf"), "").unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    assert!(!n.exists("calls"), "kubeadm must not run again");
    assert_eq!(n.read("kubectl-calls").lines().count(), 2);
    assert!(!n.exists("var/lib/piforge/cni-pending"));
}

#[test]
fn waits_for_the_clock_then_goes_on_with_a_warning() {
    let n = FakeNode::new(Role::Worker, Cni::None);
    fs::remove_file(n.root().join("run/systemd/timesync/synchronized")).unwrap();
    // The node's clock is behind the build (a Pi starting in 1970): the configuration was
    // written "tomorrow".
    let config = n.root().join("etc/piforge/kubeadm.yaml");
    let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .open(&config)
        .unwrap()
        .set_modified(tomorrow)
        .unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    // 5 minutes in steps of 15 s, then kubeadm runs anyway.
    assert_eq!(n.read("sleeps").lines().count(), 20);
    assert!(n.read("sleeps").lines().all(|l| l == "15"));
    assert!(n.read("calls").starts_with("join "));
    let during = n.read("status-during-1");
    assert!(
        during.contains("warning: the clock was not synchronized"),
        "{during}"
    );
    // Synchronized: no wait at all (the other tests never sleep before kubeadm).
    let n = FakeNode::new(Role::Worker, Cni::None);
    assert!(n.run(0).0);
    assert!(!n.exists("sleeps"));
    // Not synchronized, but the clock is past the build: no wait either (a node with no NTP
    // server in reach starts at once; its certificates are already valid).
    let n = FakeNode::new(Role::Worker, Cni::None);
    fs::remove_file(n.root().join("run/systemd/timesync/synchronized")).unwrap();
    assert!(n.run(0).0);
    assert!(!n.exists("sleeps"));
    assert!(!n
        .read("status-during-1")
        .contains("clock was not synchronized"));
}

#[test]
fn waits_for_the_package_step_and_shows_its_state() {
    let n = FakeNode::new(Role::Worker, Cni::None);
    let r = n.root();
    fs::create_dir_all(r.join("etc/piforge")).unwrap();
    fs::write(
        r.join("etc/piforge/first-boot-packages"),
        "# OS packages\npftool-x\n",
    )
    .unwrap();
    fs::create_dir_all(r.join("var/lib/piforge")).unwrap();
    fs::write(
        r.join("var/lib/piforge/packages-status"),
        "failed: only 100 MiB free on /\n",
    )
    .unwrap();
    // The package step never succeeds: the stand-in sleep ends the script after 20 waits,
    // and kubeadm was never run into a preflight error.
    let (ok, journal) = n.run(0);
    assert!(!ok, "{journal}");
    assert!(!n.exists("calls"), "kubeadm ran without its tools");
    let status = n.read("boot/firmware/piforge-status.txt");
    for needle in [
        "phase: waiting-for-packages\n",
        "last error: waiting for piforge-packages.service to install: pftool-x\n",
        "packages: failed: only 100 MiB free on /\n",
    ] {
        assert!(status.contains(needle), "{needle:?}: {status}");
    }
    // The step heals (the unit restarted it): the tool appears, kubeadm runs.
    fs::remove_file(r.join("sleeps")).unwrap();
    fs::remove_file(r.join("var/lib/piforge/kubeadm-started")).unwrap_or(());
    let tool = r.join("usr/local/bin/pftool-x");
    fs::write(&tool, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(r.join("var/lib/piforge/packages-status"), "ok\n").unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    assert!(n.read("calls").starts_with("join "));
    let status = n.read("boot/firmware/piforge-status.txt");
    assert!(
        status.contains("phase: done\n") && status.contains("packages: ok\n"),
        "{status}"
    );
}

/// The other first-boot script in `overlays/first-boot/`, judged by the same oracle.
#[test]
fn install_packages_script_passes_shellcheck() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("overlays/first-boot/usr/local/lib/piforge/install-packages");
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&path)
        .output()
        .expect("shellcheck is installed (tests/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A kube-vip manifest as piforge renders it for `role`, placed in the fake node.
fn place_kube_vip(n: &FakeNode, role: Role) -> String {
    let text = super::kube_vip::manifest(
        &super::kube_vip::KubeVipParams {
            image: "ghcr.io/kube-vip/kube-vip:v1.0.3".into(),
            vip: "192.168.1.9".parse().unwrap(),
            port: 6443,
            interface: "eth0".into(),
        },
        role,
    );
    let path = n.root().join("etc/kubernetes/manifests/kube-vip.yaml");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    text
}

#[test]
fn init_node_runs_kube_vip_with_super_admin_conf_until_init_is_done() {
    let n = FakeNode::new(Role::InitControlPlane, Cni::None);
    let placed = place_kube_vip(&n, Role::InitControlPlane);
    let (ok, journal) = n.run(1);
    assert!(ok, "{journal}");
    // Both attempts ran with super-admin.conf: the reset between them emptied the manifests
    // directory, and the script put the manifest back as the image had it.
    for attempt in [1, 2] {
        assert_eq!(
            n.read(&format!("kube-vip-during-{attempt}")),
            "path: /etc/kubernetes/super-admin.conf\n",
            "attempt {attempt}"
        );
    }
    // After init: admin.conf, and nothing else changed.
    let now = n.read("etc/kubernetes/manifests/kube-vip.yaml");
    assert_eq!(
        now,
        placed.replace(
            "path: /etc/kubernetes/super-admin.conf",
            "path: /etc/kubernetes/admin.conf"
        )
    );
    assert!(
        !now.contains("path: /etc/kubernetes/super-admin.conf"),
        "{now}"
    );
    let mode = fs::metadata(n.root().join("etc/kubernetes/manifests/kube-vip.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        journal.contains("kube-vip now uses /etc/kubernetes/admin.conf"),
        "{journal}"
    );
    assert!(
        !n.exists("var/lib/piforge/kube-vip.yaml"),
        "the spare copy is gone"
    );
}

#[test]
fn joining_control_plane_keeps_kube_vip_on_admin_conf() {
    let n = FakeNode::new(Role::JoinControlPlane, Cni::Flannel);
    let placed = place_kube_vip(&n, Role::JoinControlPlane);
    let (ok, journal) = n.run(1);
    assert!(ok, "{journal}");
    assert_eq!(
        n.read("kube-vip-during-2"),
        "path: /etc/kubernetes/admin.conf\n"
    );
    assert_eq!(n.read("etc/kubernetes/manifests/kube-vip.yaml"), placed);
    assert!(!journal.contains("kube-vip now uses"), "{journal}");
}

#[test]
fn nodes_without_kube_vip_get_no_manifest() {
    let n = FakeNode::new(Role::InitControlPlane, Cni::None);
    let (ok, journal) = n.run(1);
    assert!(ok, "{journal}");
    assert!(!n.exists("etc/kubernetes/manifests/kube-vip.yaml"));
    assert!(!n.exists("kube-vip-during-1"));
}

/// The seed's instance-id of `node` in the spec `text` (profiles read from `dir`).
fn instance_id_in(
    text: &str,
    dir: &Path,
    node: &str,
    inputs: &super::cloud_init::NodeInputs,
) -> String {
    let spec = crate::spec::parse(text, "cluster.yaml", dir, &["1.34.2"])
        .unwrap_or_else(|e| panic!("{e}"));
    let n = spec.nodes.iter().find(|n| n.name.as_str() == node).unwrap();
    let md = super::cloud_init::seed(&spec, n, &["sudo".to_string()], inputs).meta_data;
    md.lines()
        .find_map(|l| l.strip_prefix("instance-id: "))
        .unwrap()
        .to_string()
}

#[test]
fn instance_id_changes_with_everything_the_node_receives_and_nothing_else() {
    use super::cloud_init::NodeInputs;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/render/testdata");
    let text = fs::read_to_string(dir.join("cluster.yaml")).unwrap();
    let inputs = NodeInputs {
        cluster_name: "snap".into(),
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        token: Token::parse("abcdef.0123456789abcdef").unwrap(),
        endpoint: "192.168.1.10:6443".into(),
        kubeadm_config: "kind: JoinConfiguration\n".into(),
        artifact_digests: vec![
            ("kubeadm".into(), "a".repeat(64)),
            ("kubelet".into(), "b".repeat(64)),
        ],
        base_image_sha256: "c".repeat(64),
        role_digest: "d".repeat(64),
    };
    let id =
        |text: &str, dir: &Path, node: &str, i: &NodeInputs| instance_id_in(text, dir, node, i);
    let base_w1 = id(&text, &dir, "w1", &inputs);
    let base_w2 = id(&text, &dir, "w2", &inputs);
    assert!(
        base_w1.starts_with("piforge-") && base_w1.len() == 24,
        "{base_w1}"
    );
    assert_ne!(base_w1, base_w2);

    // Each input alone changes it, and each to a different id.
    let mut seen = vec![base_w1.clone()];
    let changed: Vec<(&str, NodeInputs)> = vec![
        (
            "cluster name",
            NodeInputs {
                cluster_name: "other".into(),
                ..inputs.clone()
            },
        ),
        (
            "CA",
            NodeInputs {
                ca_cert_pem: inputs.ca_cert_pem.replace("AAAA", "AAAB"),
                ..inputs.clone()
            },
        ),
        (
            "token",
            NodeInputs {
                token: Token::parse("abcdef.0123456789abcdeg").unwrap(),
                ..inputs.clone()
            },
        ),
        (
            "endpoint",
            NodeInputs {
                endpoint: "192.168.1.9:6443".into(),
                ..inputs.clone()
            },
        ),
        (
            "kubeadm config",
            NodeInputs {
                kubeadm_config: "kind: JoinConfiguration\n# x\n".into(),
                ..inputs.clone()
            },
        ),
        (
            "artifact digest",
            NodeInputs {
                artifact_digests: vec![
                    ("kubeadm".into(), "a".repeat(64)),
                    ("kubelet".into(), "e".repeat(64)),
                ],
                ..inputs.clone()
            },
        ),
        (
            "base image",
            NodeInputs {
                base_image_sha256: "f".repeat(64),
                ..inputs.clone()
            },
        ),
        (
            "role content",
            NodeInputs {
                role_digest: "0".repeat(64),
                ..inputs.clone()
            },
        ),
    ];
    for (what, i) in &changed {
        let other = id(&text, &dir, "w1", i);
        assert!(
            !seen.contains(&other),
            "{what} did not change the instance-id"
        );
        seen.push(other);
    }
    // The node's own config (its address), the user's keys, the time zone: changed.
    for (what, from, to) in [
        ("address", "192.168.1.20/24", "192.168.1.21/24"),
        ("ssh key", "admin@snapshot", "admin@laptop"),
        ("time zone", "Europe/Lisbon", "Europe/Paris"),
    ] {
        assert_ne!(
            id(&text.replace(from, to), &dir, "w1", &inputs),
            base_w1,
            "{what}"
        );
    }
    // The node's profile: w2's id follows its profile, w1's does not.
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("profiles")).unwrap();
    fs::write(tmp.path().join("base.img.xz"), "").unwrap();
    let profile = fs::read_to_string(dir.join("profiles/dhcp-worker.yaml")).unwrap();
    fs::write(tmp.path().join("profiles/dhcp-worker.yaml"), &profile).unwrap();
    // Another directory for the spec (as for another output directory): nothing changes.
    assert_eq!(id(&text, tmp.path(), "w1", &inputs), base_w1);
    assert_eq!(id(&text, tmp.path(), "w2", &inputs), base_w2);
    fs::write(
        tmp.path().join("profiles/dhcp-worker.yaml"),
        profile.replace("htop", "btop"),
    )
    .unwrap();
    assert_ne!(id(&text, tmp.path(), "w2", &inputs), base_w2, "profile");
    assert_eq!(
        id(&text, tmp.path(), "w1", &inputs),
        base_w1,
        "another node's profile"
    );

    // Nothing else: the artifacts' order, another node's DHCP entry renamed or moved first.
    let mut reordered = inputs.clone();
    reordered.artifact_digests.reverse();
    assert_eq!(id(&text, &dir, "w1", &reordered), base_w1);
    assert_eq!(
        id(&text.replace("name: w2", "name: w9"), &dir, "w1", &inputs),
        base_w1
    );
    let w2_entry = "  - name: w2\n    role: worker\n    profile: profiles/dhcp-worker.yaml\n";
    assert!(text.ends_with(w2_entry));
    let moved = text
        .replace(w2_entry, "")
        .replace("nodes:\n", &format!("nodes:\n{w2_entry}"));
    assert_eq!(id(&moved, &dir, "w1", &inputs), base_w1, "node order");
    assert_eq!(id(&moved, &dir, "w2", &inputs), base_w2, "node order");
}

#[test]
fn login_groups_from_the_base_narrowed_or_extended_by_the_spec() {
    use super::cloud_init::login_groups;
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Raspberry Pi OS-like: pi-gen's groups that exist, in pi-gen's order, then the
    // cloud-init default user's that exist, then systemd-journal.
    let existing = v(&[
        "root",
        "adm",
        "dialout",
        "sudo",
        "video",
        "gpio",
        "i2c",
        "spi",
        "render",
        "dip",
        "systemd-journal",
        "docker",
    ]);
    let base_default = v(&["adm", "dip", "lxd", "sudo"]);
    let pi_os = [
        "adm",
        "dialout",
        "sudo",
        "video",
        "gpio",
        "spi",
        "i2c",
        "render",
        "dip",
        "systemd-journal",
    ];
    assert_eq!(login_groups(&base_default, &existing, None, &[]), v(&pi_os));
    // extra_groups adds (kept even if the base lacks it: cloud-init creates it).
    assert_eq!(
        login_groups(
            &base_default,
            &existing,
            None,
            &v(&["docker", "adm", "k8s"])
        ),
        v(&[&pi_os[..], &["docker", "k8s"]].concat())
    );
    // user_groups replaces.
    let narrow = v(&["sudo", "video"]);
    assert_eq!(
        login_groups(&base_default, &existing, Some(&narrow), &v(&["i2c"])),
        v(&["sudo", "video", "i2c"])
    );
    assert!(login_groups(&base_default, &existing, Some(&[]), &[]).is_empty());
    // No /etc/group read: the old fixed set.
    assert_eq!(
        login_groups(&base_default, &[], None, &[]),
        v(&["adm", "sudo", "systemd-journal"])
    );
}

/// A reimaged node's rejoin file (as the build writes it for node `n1` at 192.168.1.11,
/// with the VIP 192.168.1.9 and another control plane at 192.168.1.12), and a fake cluster
/// that still holds the old card: its Node object (`ready`) and, for a control plane, its
/// etcd member beside the surviving one on cp-2.
fn reimaged(role: Role, ready: &str) -> FakeNode {
    let n = FakeNode::new(role, Cni::None);
    let r = n.root();
    let rejoin = rejoin_file(&RejoinParams {
        node: "n1".into(),
        address: Some("192.168.1.11".into()),
        cluster_name: "home".into(),
        kubernetes_version: "v1.34.11".into(),
        endpoint: "192.168.1.9:6443".into(),
        servers: vec!["192.168.1.9:6443".into(), "192.168.1.12:6443".into()],
    });
    fs::write(r.join("etc/piforge/rejoin"), rejoin).unwrap();
    fs::create_dir_all(r.join("cluster")).unwrap();
    fs::write(r.join("cluster/node-n1"), ready).unwrap();
    fs::write(r.join("cluster/etcd-pods"), "etcd-n1 n1\netcd-cp-2 cp-2\n").unwrap();
    fs::write(
        r.join("cluster/members"),
        "8e9e05c52164694d, started, n1, https://192.168.1.11:2380, https://192.168.1.11:2379, false\n\
         91bc3c398fb3c146, started, cp-2, https://192.168.1.12:2380, https://192.168.1.12:2379, false\n",
    )
    .unwrap();
    n
}

/// Whether the stand-in kubeadm was asked to join.
fn joined(n: &FakeNode) -> bool {
    n.read("calls").lines().any(|l| l.starts_with("join "))
}

const ETCD_TLS: &str = "--cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key";

#[test]
fn reimaged_control_plane_removes_its_old_member_and_node_then_joins() {
    let n = reimaged(Role::JoinControlPlane, "False");
    let r = n.root().display().to_string();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    // kubeadm: a one-hour system:masters certificate from the CA on the card, then the join.
    let calls = n.read("calls");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        [
            format!("kubeconfig user --config {r}/run/piforge/rejoin-kubeadm.yaml --client-name piforge-rejoin:n1 --org system:masters --validity-period 1h").as_str(),
            &format!("join --config {r}/etc/piforge/kubeadm.yaml"),
        ]
    );
    // The config it was given names the cluster and the card's CA directory.
    let cfg = n.read("rejoin-kubeadm-config");
    for line in [
        "kind: ClusterConfiguration",
        "clusterName: \"home\"",
        "kubernetesVersion: \"v1.34.11\"",
        "controlPlaneEndpoint: \"192.168.1.9:6443\"",
        "advertiseAddress: \"192.168.1.11\"",
    ] {
        assert!(cfg.lines().any(|l| l.trim() == line), "{line}: {cfg}");
    }
    // It parses as two kubeadm documents.
    assert_eq!(docs(&cfg).len(), 2, "{cfg}");
    // The API: through the endpoint, with the short-lived credentials; the etcd member is
    // removed through the etcd pod of cp-2 (not the old node's), after its client URL was
    // found dead; then the Node object.
    let rest = format!("--kubeconfig {r}/run/piforge/rejoin.conf --server https://192.168.1.9:6443 --request-timeout 20s");
    let kubectl = n.read("kubectl-calls");
    let kubectl: Vec<&str> = kubectl.lines().collect();
    assert_eq!(kubectl.len(), 6, "{kubectl:?}");
    assert!(kubectl.iter().all(|c| c.starts_with(&rest)), "{kubectl:?}");
    assert!(kubectl[0].ends_with("get node n1 --ignore-not-found -o jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"), "{}", kubectl[0]);
    assert!(kubectl[1].contains(
        " get pods -n kube-system -l component=etcd --field-selector status.phase=Running "
    ));
    assert!(kubectl[2].contains(" exec -n kube-system etcd-cp-2 -- etcdctl "));
    assert!(kubectl[5].ends_with(" delete node n1 --ignore-not-found"));
    assert_eq!(
        n.read("etcdctl-calls").lines().collect::<Vec<_>>(),
        [
            format!("etcd-cp-2 --endpoints https://127.0.0.1:2379 {ETCD_TLS} member list").as_str(),
            &format!("etcd-cp-2 --endpoints https://192.168.1.11:2379 {ETCD_TLS} endpoint health"),
            &format!("etcd-cp-2 --endpoints https://127.0.0.1:2379 {ETCD_TLS} member remove 8e9e05c52164694d"),
        ]
    );
    // What the cluster holds now: the surviving member only, no old Node.
    assert_eq!(
        n.read("cluster/members").lines().collect::<Vec<_>>(),
        ["91bc3c398fb3c146, started, cp-2, https://192.168.1.12:2380, https://192.168.1.12:2379, false"]
    );
    assert!(!n.exists("cluster/node-n1"));
    // The credentials are gone, and never reached the journal or the status file.
    assert!(!n.exists("run/piforge/rejoin.conf"));
    assert!(!n.exists("run/piforge/rejoin-kubeadm.yaml"));
    let status = n.read("boot/firmware/piforge-status.txt");
    for text in [&journal, &status] {
        assert!(!text.contains("FAKEPRIVATEKEY"), "{text}");
    }
    assert!(status.contains("phase: done\n"), "{status}");
    assert!(
        status.contains("replaces: the node n1 the cluster already had\n"),
        "{status}"
    );
    assert!(!status.contains("by hand"), "{status}");
    assert!(
        n.read("status-during-1").contains("phase: kubeadm-join\n"),
        "the join ran after the cleanup"
    );
    assert!(
        journal.contains("removing the old etcd member 8e9e05c52164694d of n1"),
        "{journal}"
    );
}

#[test]
fn reimaged_control_plane_asks_the_next_api_server_when_the_endpoint_is_down() {
    // Without a VIP the endpoint can be the reimaged node itself.
    let n = reimaged(Role::JoinControlPlane, "False");
    fs::write(n.root().join("cluster/down-192.168.1.9:6443"), "").unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    let kubectl = n.read("kubectl-calls");
    assert!(kubectl
        .lines()
        .next()
        .unwrap()
        .contains("--server https://192.168.1.9:6443"));
    assert!(
        kubectl
            .lines()
            .skip(1)
            .all(|l| l.contains("--server https://192.168.1.12:6443")),
        "{kubectl}"
    );
    assert!(kubectl.contains(" delete node n1 "), "{kubectl}");
    assert!(
        journal.contains("API server 192.168.1.9:6443: The connection to the server"),
        "{journal}"
    );
}

#[test]
fn reimaged_control_plane_leaves_a_running_old_card_alone() {
    // The old Node is still Ready: nothing removed, no join; the status says why and how.
    let n = reimaged(Role::JoinControlPlane, "True");
    let (ok, journal) = n.run(0);
    assert!(!ok, "the stand-in sleep gives up after 20 waits: {journal}");
    assert!(!joined(&n), "joined beside a Ready node");
    assert!(!n.exists("etcdctl-calls"));
    assert!(n.exists("cluster/node-n1"));
    let status = n.read("boot/firmware/piforge-status.txt");
    assert!(status.contains("phase: failed\n"), "{status}");
    assert!(
        status.contains(
            "last error: the cluster still has a Ready node n1: is the old card still running?"
        ),
        "{status}"
    );
    // The old card is powered off: the next start heals without a hand on the node.
    fs::write(n.root().join("cluster/node-n1"), "Unknown").unwrap();
    fs::remove_file(n.root().join("sleeps")).unwrap();
    let (ok, journal) = n.run(0);
    assert!(ok, "{journal}");
    assert!(n.read("calls").ends_with(&format!(
        "join --config {}/etc/piforge/kubeadm.yaml\n",
        n.root().display()
    )));
    assert!(!n.exists("cluster/node-n1"));

    // Its etcd member still answers (the Node went NotReady, the old card did not stop):
    // nothing is removed either.
    let n = reimaged(Role::JoinControlPlane, "False");
    fs::write(
        n.root().join("cluster/healthy"),
        "https://192.168.1.11:2379\n",
    )
    .unwrap();
    let (ok, _) = n.run(0);
    assert!(!ok);
    assert!(!n.read("etcdctl-calls").contains("member remove"));
    assert!(n.exists("cluster/node-n1"));
    assert!(n.read("boot/firmware/piforge-status.txt").contains(
        "last error: the old etcd member of n1 (https://192.168.1.11:2379) still answers"
    ));
}

#[test]
fn reimaged_control_plane_without_a_reachable_api_shows_the_commands_to_run_by_hand() {
    for broken in ["cluster/down-192.168.1.9:6443", "cluster/no-quorum"] {
        let n = reimaged(Role::JoinControlPlane, "False");
        fs::write(n.root().join(broken), "").unwrap();
        if broken.contains("down") {
            fs::write(n.root().join("cluster/down-192.168.1.12:6443"), "").unwrap();
        }
        let (ok, journal) = n.run(0);
        assert!(!ok, "{journal}");
        assert!(!joined(&n), "{broken}");
        let status = n.read("boot/firmware/piforge-status.txt");
        // The same commands the build prints, indented, under one line that says what for.
        let by_hand: String = manual_rejoin_commands("n1", true)
            .iter()
            .map(|c| format!("  {c}\n"))
            .collect();
        assert!(
            status.contains(&format!(
                "if this keeps failing, remove the old node by hand where kubectl reaches the cluster:\n{by_hand}"
            )),
            "{broken}: {status}"
        );
        assert!(!n.exists("run/piforge/rejoin.conf"));
        let err = if broken.contains("down") {
            "last error: no API server answered (192.168.1.9:6443 192.168.1.12:6443): the old node n1 is still in the cluster"
        } else {
            "last error: etcdctl member remove 8e9e05c52164694d failed: Error: etcdserver: unhealthy cluster"
        };
        assert!(status.contains(err), "{status}");
    }
    // The build prints those commands for a reimaged control plane, the Node last.
    let c = manual_rejoin_commands("n1", true);
    assert_eq!(c.len(), 3);
    assert!(c[0].ends_with("member list") && c[1].contains("member remove <the ID of n1"));
    assert_eq!(c[2], "kubectl delete node n1");
    assert_eq!(
        manual_rejoin_commands("w", false),
        ["kubectl delete node w"]
    );
}

#[test]
fn reimaged_worker_joins_under_its_old_name_as_kubeadm_allows() {
    // A worker holds no credentials: kubeadm itself refuses while the old Node is Ready and
    // joins beside a NotReady one; the script retries until then and says whom it replaces.
    let n = reimaged(Role::Worker, "False");
    let (ok, journal) = n.run(1);
    assert!(ok, "{journal}");
    let calls = n.read("calls");
    assert!(!calls.contains("kubeconfig"), "{calls}");
    assert!(calls.starts_with("join ") && calls.lines().last().unwrap().starts_with("join "));
    assert!(!n.exists("kubectl-calls"));
    assert!(n
        .read("boot/firmware/piforge-status.txt")
        .contains("replaces: the node n1 the cluster already had\n"));
    // Without a rejoin file, a control plane joins at once (a first join).
    let n = FakeNode::new(Role::JoinControlPlane, Cni::None);
    assert!(n.run(0).0);
    assert!(n.read("calls").starts_with("join "));
    assert!(!n.exists("kubectl-calls"));
}

#[test]
fn rejoin_file_values_are_read_back_and_nothing_else() {
    let text = rejoin_file(&RejoinParams {
        node: "cp-1".into(),
        address: None,
        cluster_name: "home".into(),
        kubernetes_version: "v1.35.8".into(),
        endpoint: "[fd00::9]:6443".into(),
        servers: vec!["[fd00::9]:6443".into(), "[fd00::12]:6443".into()],
    });
    assert!(text.contains("\nnode=cp-1\naddress=\n"), "{text}");
    assert!(
        text.contains("\nservers=[fd00::9]:6443 [fd00::12]:6443\n"),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("rejoin");
    fs::write(
        &f,
        format!("{text}evil=$(touch {}/owned)\n", tmp.path().display()),
    )
    .unwrap();
    let read = |key: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}\nREJOIN={}\nrejoin_value {key}",
                functions(),
                f.display()
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(read("node"), "cp-1\n");
    assert_eq!(read("servers"), "[fd00::9]:6443 [fd00::12]:6443\n");
    assert_eq!(read("version"), "v1.35.8\n");
    assert_eq!(read("evil"), "", "a value with other characters is dropped");
    assert!(!tmp.path().join("owned").exists());
}
