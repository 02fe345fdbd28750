//! The container images a node runs, per release and per kubeadm role: kubeadm's own list
//! (what `kubeadm config images list --kubernetes-version X` prints), the CNI's and
//! kube-vip's. `piforge fetch` pulls them; the build puts each role's into its cards.

use super::Release;
use crate::oci::ImageRef;
use crate::render::kubeadm::ImageMeta;

/// Why a node needs an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageUse {
    /// kube-apiserver, kube-controller-manager, kube-scheduler, etcd: static pods of a
    /// control plane.
    ControlPlane,
    /// kube-proxy (a DaemonSet), pause (every pod's sandbox), CoreDNS (a Deployment the
    /// scheduler may place on any node, workers included).
    EveryNode,
    /// The pod network's DaemonSet (flannel and its CNI-plugin init container).
    Cni,
    /// kube-vip's static pod, on control planes of a cluster with a VIP.
    KubeVip,
}

/// One image of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub image: ImageRef,
    pub usage: ImageUse,
}

/// Which of a release's images a node gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageNeeds {
    pub control_plane: bool,
    pub flannel: bool,
    pub vip: bool,
}

/// The registry and repository kubeadm pulls its images from (`imageRepository`, kubeadm's
/// default, written into the ClusterConfiguration so the two cannot drift).
pub const KUBEADM_IMAGE_REPOSITORY: &str = "registry.k8s.io";

/// The kubeadm `ImageMeta` (`imageRepository`, `imageTag`) that makes kubeadm deploy `image`
/// as its etcd (`component` `"etcd"`) or CoreDNS (`"coredns"`). kubeadm names them
/// `<repository>/etcd:<tag>` and `<repository>/coredns:<tag>`, where CoreDNS's repository is
/// `registry.k8s.io/coredns` when none is set (cmd/kubeadm/app/images/images.go,
/// GetEtcdImage, GetDNSImage, GetGenericImage): a digest, or an image of another name, cannot
/// be written that way. `Err` says why, for the catalog's checks.
pub fn kubeadm_image_meta(component: &str, image: &str) -> Result<ImageMeta, String> {
    let r = ImageRef::parse(image).map_err(|e| e.to_string())?;
    if r.reference.starts_with("sha256:") {
        return Err(format!(
            "kubeadm takes a tag for its {component} image, not a digest ({image})"
        ));
    }
    let path = format!("{}/{}", r.registry, r.repository);
    let repository = path.strip_suffix(&format!("/{component}")).ok_or_else(|| {
        format!(
            "kubeadm names its {component} image REPOSITORY/{component}:TAG, which {image} is not"
        )
    })?;
    // What kubeadm uses when the ClusterConfiguration sets no repository of its own.
    let default = match component {
        "coredns" => format!("{KUBEADM_IMAGE_REPOSITORY}/coredns"),
        _ => KUBEADM_IMAGE_REPOSITORY.to_string(),
    };
    if component == "coredns" && repository == KUBEADM_IMAGE_REPOSITORY {
        // kubeadm turns dns.imageRepository `registry.k8s.io` into `registry.k8s.io/coredns`.
        return Err(format!(
            "kubeadm cannot name {image}: it takes CoreDNS from {default}/coredns in that registry"
        ));
    }
    Ok(ImageMeta {
        repository: (repository != default).then(|| repository.to_string()),
        tag: r.reference,
    })
}

impl Release {
    /// kubeadm's image list for this release, in `kubeadm config images list` order.
    pub fn kubeadm_images(&self) -> Vec<String> {
        let v = &self.versions().kubernetes;
        let mut out: Vec<String> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ]
        .iter()
        .map(|n| format!("{KUBEADM_IMAGE_REPOSITORY}/{n}:v{v}"))
        .collect();
        out.extend(self.versions().coredns_image.clone());
        out.push(self.pause_image().to_string());
        out.extend(self.versions().etcd_image.clone());
        out
    }

    /// The `ImageMeta` of etcd and of CoreDNS for the ClusterConfiguration: the catalog's
    /// images, so kubeadm asks for exactly what the card holds (none when the catalog names
    /// none; the catalog refused an image kubeadm cannot name).
    pub fn kubeadm_image_metas(&self) -> (Option<ImageMeta>, Option<ImageMeta>) {
        let v = self.versions();
        let meta = |c, i: &Option<String>| i.as_deref().and_then(|i| kubeadm_image_meta(c, i).ok());
        (
            meta("etcd", &v.etcd_image),
            meta("coredns", &v.coredns_image),
        )
    }

    /// Every image of the release (kubeadm's, flannel's, kube-vip's), each once, with why a
    /// node needs it. References the catalog checked when it was parsed.
    pub fn images(&self) -> Vec<ImageSpec> {
        let v = self.versions();
        let mut out = Vec::new();
        let mut push = |s: &str, usage| {
            if let Ok(image) = ImageRef::parse(s) {
                if !out.iter().any(|x: &ImageSpec| x.image == image) {
                    out.push(ImageSpec { image, usage });
                }
            }
        };
        for s in self.kubeadm_images() {
            let every = s.contains("/kube-proxy:")
                || s == self.pause_image()
                || Some(&s) == v.coredns_image.as_ref();
            push(
                &s,
                if every {
                    ImageUse::EveryNode
                } else {
                    ImageUse::ControlPlane
                },
            );
        }
        for s in &v.flannel_images {
            push(s, ImageUse::Cni);
        }
        if let Some(s) = &v.kube_vip_image {
            push(s, ImageUse::KubeVip);
        }
        out
    }

    /// The images a node with `needs` gets.
    pub fn images_for(&self, needs: ImageNeeds) -> Vec<ImageSpec> {
        self.images()
            .into_iter()
            .filter(|i| match i.usage {
                ImageUse::EveryNode => true,
                ImageUse::ControlPlane => needs.control_plane,
                ImageUse::Cni => needs.flannel,
                ImageUse::KubeVip => needs.control_plane && needs.vip,
            })
            .collect()
    }
}

/// The `image:` values of a Kubernetes manifest (the flannel DaemonSet), in order, each once.
pub fn manifest_images(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(v) = t.strip_prefix("image:") {
            let v = v
                .split(" #")
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            if !v.is_empty() && !out.iter().any(|x| x == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::Catalog;

    #[test]
    fn every_release_has_kubeadms_seven_images_and_flannels_two() {
        let cat = Catalog::builtin().unwrap();
        for (minor, etcd, coredns, pause) in [
            ("1.36", "3.6.10-0", "v1.14.2", "3.10.2"),
            ("1.35", "3.6.10-0", "v1.13.1", "3.10.1"),
            ("1.34", "3.6.10-0", "v1.12.1", "3.10.1"),
        ] {
            let r = cat.release(minor).unwrap();
            let k = r.kubernetes();
            assert_eq!(
                r.kubeadm_images(),
                vec![
                    format!("registry.k8s.io/kube-apiserver:v{k}"),
                    format!("registry.k8s.io/kube-controller-manager:v{k}"),
                    format!("registry.k8s.io/kube-scheduler:v{k}"),
                    format!("registry.k8s.io/kube-proxy:v{k}"),
                    format!("registry.k8s.io/coredns/coredns:{coredns}"),
                    format!("registry.k8s.io/pause:{pause}"),
                    format!("registry.k8s.io/etcd:{etcd}"),
                ],
                "{minor}"
            );
            let cp = r.images_for(ImageNeeds {
                control_plane: true,
                flannel: true,
                vip: true,
            });
            assert_eq!(cp.len(), 10, "{minor}: {cp:?}");
            let worker: Vec<String> = r
                .images_for(ImageNeeds {
                    control_plane: false,
                    flannel: true,
                    vip: true,
                })
                .iter()
                .map(|i| i.image.to_string())
                .collect();
            assert_eq!(
                worker,
                vec![
                    format!("registry.k8s.io/kube-proxy:v{k}"),
                    format!("registry.k8s.io/coredns/coredns:{coredns}"),
                    format!("registry.k8s.io/pause:{pause}"),
                    "ghcr.io/flannel-io/flannel:v0.28.4".to_string(),
                    "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1".to_string(),
                ]
            );
            let no_cni = r.images_for(ImageNeeds {
                control_plane: true,
                flannel: false,
                vip: false,
            });
            assert!(no_cni
                .iter()
                .all(|i| i.usage != ImageUse::Cni && i.usage != ImageUse::KubeVip));
        }
    }

    #[test]
    fn kubeadm_names_etcd_and_coredns_by_repository_and_tag() {
        let m = |c, i| kubeadm_image_meta(c, i);
        let meta = |repository: Option<&str>, tag: &str| ImageMeta {
            repository: repository.map(str::to_string),
            tag: tag.into(),
        };
        assert_eq!(
            m("etcd", "registry.k8s.io/etcd:3.6.10-0"),
            Ok(meta(None, "3.6.10-0"))
        );
        assert_eq!(
            m("coredns", "registry.k8s.io/coredns/coredns:v1.14.2"),
            Ok(meta(None, "v1.14.2"))
        );
        assert_eq!(
            m("etcd", "registry.lan:5000/k8s/etcd:3.6.11-0"),
            Ok(meta(Some("registry.lan:5000/k8s"), "3.6.11-0"))
        );
        assert_eq!(
            m("coredns", "registry.lan/coredns:1.14.2"),
            Ok(meta(Some("registry.lan"), "1.14.2"))
        );
        for (c, i) in [
            (
                "etcd",
                "registry.k8s.io/etcd@sha256:".to_string() + &"a".repeat(64),
            ),
            ("etcd", "registry.k8s.io/etcd-custom:3.6.10-0".to_string()),
            ("coredns", "registry.k8s.io/coredns:v1.14.2".to_string()),
            ("coredns", "ghcr.io/me/dns:v1".to_string()),
        ] {
            assert!(kubeadm_image_meta(c, &i).is_err(), "{i}");
        }
    }

    #[test]
    fn manifest_images_are_read_in_order() {
        let text = "spec:\n  initContainers:\n  - name: install-cni-plugin\n    image: ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1\n  - image: \"ghcr.io/flannel-io/flannel:v0.28.4\" # main\n  containers:\n  - name: kube-flannel\n    image: ghcr.io/flannel-io/flannel:v0.28.4\n";
        assert_eq!(
            manifest_images(text),
            vec![
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1",
                "ghcr.io/flannel-io/flannel:v0.28.4"
            ]
        );
    }

    /// The catalog's list is what the rendered configuration makes the node run: kubeadm's
    /// images under the ClusterConfiguration's imageRepository and kubernetesVersion, the
    /// sandbox image of containerd's config, kube-vip's manifest image, flannel's images.
    #[test]
    fn the_list_matches_the_rendered_configuration() {
        use crate::render::kube_vip::{manifest, KubeVipParams};
        use crate::render::kubeadm::{render_config, ClusterParams, Cni, NodeParams, Role};
        use crate::spec::{GoDuration, Token};
        let cat = Catalog::builtin().unwrap();
        for r in cat.releases() {
            let cluster = ClusterParams {
                cluster_name: "pis".into(),
                kubernetes_version: r.kubernetes().into(),
                control_plane_endpoint: "192.168.1.10:6443".into(),
                pod_subnet: "10.42.0.0/16".parse().unwrap(),
                service_subnet: "10.96.0.0/12".parse().unwrap(),
                token: Token::parse("abcdef.0123456789abcdef").unwrap(),
                token_ttl: GoDuration::from_secs(86_400),
                ca_cert_hash: format!("sha256:{}", "ab".repeat(32)),
                cri_socket: "unix:///run/containerd/containerd.sock".into(),
                cni: Cni::Flannel,
                etcd_image: r.kubeadm_image_metas().0,
                coredns_image: r.kubeadm_image_metas().1,
            };
            let node = NodeParams {
                name: "cp1".into(),
                role: Role::InitControlPlane,
                advertise_address: Some("192.168.1.10".into()),
            };
            let text = render_config(&cluster, &node);
            let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
            let cc = docs
                .iter()
                .find(|d| d["kind"].as_str() == Some("ClusterConfiguration"))
                .unwrap();
            let repo = cc["imageRepository"].as_str().unwrap();
            let version = cc["kubernetesVersion"].as_str().unwrap();
            let init = &docs[0];
            assert_eq!(
                init["nodeRegistration"]["imagePullPolicy"].as_str(),
                Some("IfNotPresent")
            );
            let list = r.kubeadm_images();
            for c in [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
            ] {
                assert!(
                    list.contains(&format!("{repo}/{c}:{version}")),
                    "{c} {list:?}"
                );
            }
            for i in &list {
                assert!(i.starts_with(&format!("{repo}/")), "{i}");
            }
            // etcd and CoreDNS as kubeadm names them from this configuration
            // (images.go: GetEtcdImage, GetDNSImage): the catalog's, so kubeadm asks for
            // exactly what the card holds, whatever tags its binary defaults to.
            let etcd = &cc["etcd"]["local"];
            let etcd_repo = etcd["imageRepository"].as_str().unwrap_or(repo);
            let etcd_image = format!("{etcd_repo}/etcd:{}", etcd["imageTag"].as_str().unwrap());
            assert_eq!(Some(&etcd_image), r.versions().etcd_image.as_ref());
            let dns = &cc["dns"];
            let dns_repo = dns["imageRepository"]
                .as_str()
                .map_or(format!("{repo}/coredns"), str::to_string);
            let dns_image = format!("{dns_repo}/coredns:{}", dns["imageTag"].as_str().unwrap());
            assert_eq!(Some(&dns_image), r.versions().coredns_image.as_ref());
            assert!(list.contains(&etcd_image) && list.contains(&dns_image));
            // containerd's sandbox image (both config versions) is the catalog's pause.
            for major in [1, 2] {
                let f = crate::payload_files::containerd_config(major);
                let conf =
                    crate::payload_files::render(f.text(), &[("PAUSE_IMAGE", r.pause_image())])
                        .unwrap();
                let sandbox = conf
                    .lines()
                    .find_map(|l| {
                        let l = l.trim();
                        l.strip_prefix("sandbox = ")
                            .or_else(|| l.strip_prefix("sandbox_image = "))
                    })
                    .unwrap()
                    .trim_matches('"');
                assert!(
                    list.iter().any(|i| i == sandbox),
                    "{sandbox} not in {list:?}"
                );
                assert!(r
                    .images()
                    .iter()
                    .any(|i| i.image.to_string() == sandbox && i.usage == ImageUse::EveryNode));
            }
            // kube-vip's manifest names the catalog's image.
            let vip = KubeVipParams {
                vip: "192.168.1.9".parse().unwrap(),
                port: 6443,
                interface: "eth0".into(),
                image: r.kube_vip_image().unwrap().into(),
            };
            let m = manifest(&vip, Role::InitControlPlane);
            for i in manifest_images(&m) {
                assert!(
                    r.images()
                        .iter()
                        .any(|x| x.image.to_string() == i && x.usage == ImageUse::KubeVip),
                    "{i}"
                );
            }
            // flannel's manifest at this version names these two images (its DaemonSet's
            // init container and container, as in flannel's Documentation/kube-flannel.yml).
            let flannel = format!(
                "      initContainers:\n      - name: install-cni-plugin\n        image: ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1\n      containers:\n      - name: kube-flannel\n        image: ghcr.io/flannel-io/flannel:v{}\n",
                r.versions().flannel
            );
            let mut want = manifest_images(&flannel);
            want.sort();
            let mut got = r.versions().flannel_images.clone();
            got.sort();
            assert_eq!(got, want);
        }
    }
}
