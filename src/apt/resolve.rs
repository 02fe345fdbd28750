//! Which packages to add to a base: the wanted ones and every dependency the base's dpkg
//! status does not already satisfy, chosen from the repositories' candidates.
//!
//! Follows dpkg's rules for `Depends`/`Pre-Depends` (deb-control(5)): alternatives `a | b`
//! (the first one that can be had, after any one the base or the selection already
//! satisfies), version relations, `Provides` (a versioned dependency is satisfied only by a
//! versioned provide), architecture qualifiers `:any`/`:native`. Among candidates of one name
//! the highest version wins. `Conflicts`/`Breaks` are not weighed: dpkg checks them when it
//! installs, and its error reaches the first-boot status file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::control;
use super::index::Candidate;
use super::version;

/// A package the base has installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub provides: String,
}

/// Installed packages from a dpkg status file (`Status: install ok installed`, or `hold`).
pub fn installed(status: &str) -> Result<BTreeMap<String, Installed>, String> {
    let mut out = BTreeMap::new();
    for p in control::parse(status)? {
        let (Some(name), Some(st)) = (p.get("Package"), p.get("Status")) else {
            continue;
        };
        if st.split_whitespace().nth(2) != Some("installed") {
            continue;
        }
        out.insert(
            name.to_string(),
            Installed {
                version: p.get("Version").unwrap_or("").to_string(),
                provides: p.get("Provides").unwrap_or("").to_string(),
            },
        );
    }
    Ok(out)
}

/// One alternative of a dependency: a name, maybe a version relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rel {
    pub name: String,
    pub op: Option<(String, String)>,
}

impl std::fmt::Display for Rel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            Some((op, v)) => write!(f, "{} ({op} {v})", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// `a (>= 1) | b, c:any` -> [[a >= 1, b], [c]]. An alternative for another architecture
/// (`c:amd64`) is dropped: a node cannot use it.
pub fn parse_relations(s: &str) -> Vec<Vec<Rel>> {
    s.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    // `name (op version) [archs] <profiles>`: the restrictions come after the
                    // relation, whose `<<` is not a profile.
                    let (name, rest) = match alt.find('(') {
                        Some(i) => {
                            let j = alt[i..].find(')').map_or(alt.len(), |j| i + j);
                            (alt[..i].trim(), Some(&alt[i + 1..j]))
                        }
                        None => (alt.split(['[', '<']).next().unwrap_or("").trim(), None),
                    };
                    let name = match name.split_once(':') {
                        Some((n, "any" | "native" | "arm64")) => n,
                        Some(_) => return None,
                        None => name,
                    };
                    if name.is_empty() {
                        return None;
                    }
                    let op = rest.and_then(|r| {
                        let r = r.trim();
                        let split = r.find(|c: char| !"<>=".contains(c))?;
                        Some((r[..split].to_string(), r[split..].trim().to_string()))
                    });
                    Some(Rel {
                        name: name.to_string(),
                        op,
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn version_ok(have: &str, op: &Option<(String, String)>) -> bool {
    match op {
        None => true,
        Some((op, want)) => version::satisfies(have, op, want),
    }
}

/// Whether a `Provides` field satisfies `rel`.
fn provides_ok(provides: &str, rel: &Rel) -> bool {
    parse_relations(provides).iter().flatten().any(|p| {
        p.name == rel.name
            && match (&rel.op, &p.op) {
                (None, _) => true,
                (Some(_), Some((eq, v))) if eq == "=" => version_ok(v, &rel.op),
                (Some(_), _) => false,
            }
    })
}

/// The packages to add, in dependency order (a package after what it depends on, as far as
/// cycles allow), and why each is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub packages: Vec<Candidate>,
    /// For each package: the wanted package, or `<package> needs <relation>`.
    pub reasons: BTreeMap<String, String>,
}

/// Resolves `wanted` against the base's `installed` packages and the repositories'
/// `candidates`. Wanted packages the base has (any version) are left out.
pub fn resolve(
    wanted: &[String],
    installed: &BTreeMap<String, Installed>,
    candidates: &[Candidate],
) -> Result<Resolution, String> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_name.entry(&c.name).or_default().push(i);
        for p in parse_relations(&c.provides).into_iter().flatten() {
            providers.entry(p.name).or_default().push(i);
        }
    }
    let mut r = Resolver {
        installed,
        candidates,
        by_name,
        providers,
        chosen: BTreeMap::new(),
        order: Vec::new(),
        reasons: BTreeMap::new(),
    };
    for w in wanted {
        if installed.contains_key(w) {
            continue;
        }
        let rel = Rel {
            name: w.clone(),
            op: None,
        };
        let i = r
            .candidate(&rel)
            .ok_or_else(|| format!("{w} is in none of the base image's apt sources"))?;
        r.reasons
            .insert(candidates[i].name.clone(), "wanted".into());
        r.visit(i)?;
    }
    Ok(Resolution {
        packages: r.order.iter().map(|&i| candidates[i].clone()).collect(),
        reasons: r.reasons,
    })
}

struct Resolver<'a> {
    installed: &'a BTreeMap<String, Installed>,
    candidates: &'a [Candidate],
    by_name: HashMap<&'a str, Vec<usize>>,
    providers: HashMap<String, Vec<usize>>,
    chosen: BTreeMap<String, usize>,
    order: Vec<usize>,
    reasons: BTreeMap<String, String>,
}

impl Resolver<'_> {
    /// Whether the base or the selection already satisfies `rel`.
    fn satisfied(&self, rel: &Rel) -> bool {
        let chosen = self.chosen.get(&rel.name).map(|&i| &self.candidates[i]);
        let installed = self.installed.get(&rel.name);
        // A package chosen to replace an installed one: only the new version counts.
        if let Some(c) = chosen {
            if version_ok(&c.version, &rel.op) {
                return true;
            }
        } else if installed.is_some_and(|p| version_ok(&p.version, &rel.op)) {
            return true;
        }
        self.installed
            .values()
            .any(|p| !p.provides.is_empty() && provides_ok(&p.provides, rel))
            || self
                .chosen
                .values()
                .any(|&i| provides_ok(&self.candidates[i].provides, rel))
    }

    /// The best candidate for `rel`: the highest version of that name that satisfies it,
    /// else a provider (the first by name).
    fn candidate(&self, rel: &Rel) -> Option<usize> {
        let best = self
            .by_name
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| version_ok(&self.candidates[i].version, &rel.op))
            .max_by(|&a, &b| {
                version::compare(&self.candidates[a].version, &self.candidates[b].version)
                    .then(b.cmp(&a))
            });
        best.or_else(|| {
            let provided: BTreeSet<(&str, usize)> = self
                .providers
                .get(&rel.name)
                .into_iter()
                .flatten()
                .filter(|&&i| provides_ok(&self.candidates[i].provides, rel))
                .map(|&i| (self.candidates[i].name.as_str(), i))
                .collect();
            provided.into_iter().next().map(|(_, i)| i)
        })
    }

    fn visit(&mut self, i: usize) -> Result<(), String> {
        let c = &self.candidates[i];
        if let Some(&j) = self.chosen.get(&c.name) {
            if j != i {
                return Err(format!(
                    "{} is needed both as {} and {}",
                    c.name, self.candidates[j].version, c.version
                ));
            }
            return Ok(());
        }
        self.chosen.insert(c.name.clone(), i);
        for group in parse_relations(&c.depends) {
            if group.iter().any(|rel| self.satisfied(rel)) {
                continue;
            }
            let pick = group
                .iter()
                .find_map(|rel| self.candidate(rel).map(|j| (rel, j)));
            let Some((rel, j)) = pick else {
                let alts: Vec<String> = group.iter().map(Rel::to_string).collect();
                return Err(format!(
                    "{} {} depends on {}, which neither the base image nor its apt sources have",
                    c.name,
                    c.version,
                    alts.join(" | ")
                ));
            };
            self.reasons
                .entry(self.candidates[j].name.clone())
                .or_insert_with(|| format!("{} needs {rel}", c.name));
            self.visit(j)?;
        }
        self.order.push(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, version: &str, depends: &str, provides: &str) -> Candidate {
        Candidate {
            name: name.into(),
            version: version.into(),
            arch: "arm64".into(),
            depends: depends.into(),
            provides: provides.into(),
            filename: format!("pool/{name}_{version}_arm64.deb"),
            size: 1,
            sha256: "0".repeat(64),
            installed_kib: 1,
            source: 0,
            origin: "o".into(),
        }
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|c| format!("{}={}", c.name, c.version))
            .collect()
    }

    #[test]
    fn relations_parse_like_dpkg() {
        let r = parse_relations(
            "libc6 (>= 2.38), a:any | b (<< 2:1.0~) [arm64], c:amd64, d <!nocheck>",
        );
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][0].op, Some((">=".into(), "2.38".into())));
        assert_eq!(r[1][0].name, "a");
        assert_eq!(r[1][1].to_string(), "b (<< 2:1.0~)");
        assert_eq!(r[2][0].name, "d");
    }

    #[test]
    fn dependencies_the_base_lacks_are_added_in_order() {
        let status = "Package: libc6\nStatus: install ok installed\nVersion: 2.41-12\n\nPackage: mawk\nStatus: install ok installed\nVersion: 1.3\nProvides: awk\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let inst = installed(status).unwrap();
        assert_eq!(inst.keys().collect::<Vec<_>>(), ["libc6", "mawk"]);
        let cands = vec![
            cand(
                "iptables",
                "1.8.11-2",
                "libc6 (>= 2.38), libxtables12 (>= 1.8.11), awk, netbase | net-alt",
                "",
            ),
            cand("iptables", "1.8.10-1", "", ""),
            cand("libxtables12", "1.8.11-2", "libc6 (>= 2.34)", ""),
            cand("libxtables12", "1.8.9-1", "", ""),
            cand("net-alt", "1", "", ""),
            cand("netbase", "6.5", "", ""),
            cand("socat", "1.8", "libc6 (>= 2.99)", ""),
            cand("libc6", "2.99-1", "libgcc-s1", ""),
            cand("gcc-14-base", "14", "", "libgcc-s1 (= 14)"),
        ];
        let r = resolve(&["iptables".into()], &inst, &cands).unwrap();
        assert_eq!(
            names(&r),
            ["libxtables12=1.8.11-2", "netbase=6.5", "iptables=1.8.11-2"]
        );
        assert_eq!(r.reasons["netbase"], "iptables needs netbase");
        assert_eq!(r.reasons["iptables"], "wanted");
        // An installed package too old for a dependency is replaced; a virtual package
        // comes from its provider.
        let r = resolve(&["socat".into()], &inst, &cands).unwrap();
        assert_eq!(names(&r), ["gcc-14-base=14", "libc6=2.99-1", "socat=1.8"]);
        // The base has it: nothing to add.
        assert!(resolve(&["mawk".into()], &inst, &cands)
            .unwrap()
            .packages
            .is_empty());
        // Unknown package, unsatisfiable dependency: one sentence naming it.
        let e = resolve(&["nope".into()], &inst, &cands).unwrap_err();
        assert_eq!(e, "nope is in none of the base image's apt sources");
        let cands = vec![cand("a", "1", "b (>= 2) | c", ""), cand("b", "1", "", "")];
        let e = resolve(&["a".into()], &inst, &cands).unwrap_err();
        assert!(
            e.contains("a 1 depends on b (>= 2) | c, which neither"),
            "{e}"
        );
    }

    #[test]
    fn cycles_end() {
        let cands = vec![cand("a", "1", "b", ""), cand("b", "1", "a", "")];
        let r = resolve(&["a".into()], &BTreeMap::new(), &cands).unwrap();
        assert_eq!(names(&r), ["b=1", "a=1"]);
    }
}
