//! Certificates and keys: make them with rcgen, read them back with x509-parser.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{CertAndKey, PkiError};

pub(super) const DAY: i64 = 86_400;
/// Kubeadm's CAs last ten years; so do ours.
pub(super) const CA_VALIDITY: i64 = 3650 * DAY;
/// The admin client certificate lives as long as the CA: it is made once, on the first build,
/// and its clock starts at the build epoch, which defaults to a fixed date in the past
/// (reproducible builds), so a one-year certificate would often be expired on arrival.
pub(super) const ADMIN_VALIDITY: i64 = CA_VALIDITY;
pub(super) const ADMIN_CN: &str = "kubernetes-admin";
pub(super) const ADMIN_GROUP: &str = "system:masters";

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |e| PkiError::Crypto {
        what,
        reason: e.to_string(),
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> PkiError {
    PkiError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn datetime(epoch: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(epoch).map_err(|e| PkiError::Crypto {
        what: "a certificate date",
        reason: format!("{epoch} is out of range: {e}"),
    })
}

/// The NotBefore of every certificate piforge makes: one day before the build epoch, so a Pi
/// whose clock (no RTC) starts a little in the past still accepts it.
pub(super) fn not_before(build_epoch: i64) -> i64 {
    build_epoch - DAY
}

/// A serial number derived from what the certificate is, so the same inputs give the same
/// serial: 16 bytes of a SHA-256, positive, with a non-zero first byte.
fn derived_serial(parts: &[&[u8]]) -> SerialNumber {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut bytes = h.finalize()[..16].to_vec();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A new self-signed ECDSA P-256 CA named `cn`, valid ten years from a day before `build_epoch`.
pub(super) fn new_ca(cn: &str, build_epoch: i64) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto("a CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let nb = not_before(build_epoch);
    params.not_before = datetime(nb)?;
    params.not_after = datetime(nb + CA_VALIDITY)?;
    params.serial_number = Some(derived_serial(&[
        b"piforge ca",
        cn.as_bytes(),
        key.public_key_raw(),
    ]));
    let cert = params
        .self_signed(&key)
        .map_err(crypto("a CA certificate"))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new ECDSA P-256 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub(super) fn new_key_pair() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto("a key pair"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

pub(super) fn parse_key(path: &Path, pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|e| malformed(path, format!("not a usable private key: {e}")))
}

/// What piforge needs to know about a certificate it reads back.
pub(super) struct CertInfo {
    pub der: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub public_key: Vec<u8>,
    pub is_ca: bool,
    pub not_before: i64,
    pub not_after: i64,
    pub organizations: Vec<String>,
    pub common_names: Vec<String>,
}

pub(super) fn parse_cert(path: &Path, pem: &str) -> Result<CertInfo, PkiError> {
    let (rest, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| malformed(path, format!("not a PEM certificate: {e}")))?;
    if parsed.label != "CERTIFICATE" {
        return Err(malformed(
            path,
            format!("PEM block is {:?}, not CERTIFICATE", parsed.label),
        ));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed(path, "more than one PEM block"));
    }
    let cert = parsed
        .parse_x509()
        .map_err(|e| malformed(path, format!("not an X.509 certificate: {e}")))?;
    Ok(CertInfo {
        der: parsed.contents.clone(),
        spki_der: cert.public_key().raw.to_vec(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        is_ca: cert.is_ca(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        organizations: names(cert.subject().iter_organization()),
        common_names: names(cert.subject().iter_common_name()),
    })
}

fn names<'a, 'b: 'a>(
    it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
) -> Vec<String> {
    it.filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect()
}

/// Checks a CA pair read from disk: a CA certificate and the private key of its public key.
pub(super) fn check_ca(
    crt_path: &Path,
    key_path: &Path,
    pair: &CertAndKey,
) -> Result<CertInfo, PkiError> {
    let info = parse_cert(crt_path, &pair.cert_pem)?;
    if !info.is_ca {
        return Err(malformed(crt_path, "not a CA certificate (no CA:TRUE)"));
    }
    let key = parse_key(key_path, &pair.key_pem)?;
    if key.public_key_raw() != info.public_key.as_slice() {
        return Err(malformed(
            key_path,
            format!("does not belong to {}", crt_path.display()),
        ));
    }
    Ok(info)
}

/// Checks a service-account pair read from disk: `pub_pem` must be the public half of `key_pem`.
pub(super) fn check_key_pair(
    key_path: &Path,
    pub_path: &Path,
    key_pem: &str,
    pub_pem: &str,
) -> Result<(), PkiError> {
    let key = parse_key(key_path, key_pem)?;
    let public = rcgen::SubjectPublicKeyInfo::from_pem(pub_pem)
        .map_err(|e| malformed(pub_path, format!("not a PEM public key: {e}")))?;
    use rcgen::PublicKeyData;
    if public.der_bytes() != key.public_key_raw() {
        return Err(malformed(
            pub_path,
            format!("is not the public half of {}", key_path.display()),
        ));
    }
    Ok(())
}

/// The client certificate of `kubernetes-admin` (group `system:masters`) for `admin_key_pem`,
/// signed by the cluster CA, valid one year from a day before `build_epoch`.
pub(super) fn new_admin_cert(
    ca: &CertAndKey,
    ca_path: &Path,
    admin_key_pem: &str,
    admin_key_path: &Path,
    build_epoch: i64,
) -> Result<String, PkiError> {
    let ca_key = parse_key(ca_path, &ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| malformed(ca_path, format!("cannot sign with this CA: {e}")))?;
    let admin_key = parse_key(admin_key_path, admin_key_pem)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ADMIN_GROUP);
    dn.push(DnType::CommonName, ADMIN_CN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let nb = not_before(build_epoch);
    params.not_before = datetime(nb)?;
    params.not_after = datetime(nb + ADMIN_VALIDITY)?;
    let ca_info = parse_cert(ca_path, &ca.cert_pem)?;
    params.serial_number = Some(derived_serial(&[
        b"piforge kubernetes-admin",
        &ca_info.spki_der,
        admin_key.public_key_raw(),
        &nb.to_be_bytes(),
    ]));
    let cert = params
        .signed_by(&admin_key, &issuer)
        .map_err(crypto("the admin certificate"))?;
    Ok(cert.pem())
}

/// Whether a stored admin certificate can be reused at `build_epoch`: it is for `admin_key`,
/// for kubernetes-admin in system:masters, valid at the build epoch, and signed by the CA.
/// A certificate that cannot be parsed at all is an error, not a reason to replace it.
pub(super) fn admin_cert_reusable(
    path: &Path,
    pem: &str,
    admin_key_pem: &str,
    admin_key_path: &Path,
    ca_cert_pem: &str,
    build_epoch: i64,
) -> Result<bool, PkiError> {
    let info = parse_cert(path, pem)?;
    let key = parse_key(admin_key_path, admin_key_pem)?;
    if key.public_key_raw() != info.public_key.as_slice()
        || info.organizations != [ADMIN_GROUP]
        || info.common_names != [ADMIN_CN]
        || !(info.not_before..=info.not_after).contains(&build_epoch)
    {
        return Ok(false);
    }
    Ok(signed_by(&info.der, ca_cert_pem))
}

/// Whether the certificate `der` carries a valid signature by the CA certificate `ca_pem`.
fn signed_by(der: &[u8], ca_pem: &str) -> bool {
    let Ok((_, ca_pem)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(ca) = ca_pem.parse_x509() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}
