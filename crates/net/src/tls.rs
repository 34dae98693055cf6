//! TLS 1.3 configurations with pinned keys: each side presents a self-signed certificate made on
//! the spot from its key, and accepts the other's only when the certificate's public key is the
//! pinned one (device → server) or on the allow list (server → devices). The handshake signature
//! proves the peer holds the matching private key. No certificate authority, no plaintext.

use crate::keys::{AllowList, Identity, PublicKey};
use crate::NetError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::sync::Arc;

/// The ALPN protocol both sides insist on.
pub const ALPN: &[u8] = b"clonecloud/1";
/// The name the device asks for; the pinned key, not the name, is what is checked.
pub const SERVER_NAME: &str = "clonecloud";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The public key inside a certificate.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Result<PublicKey, Error> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    Ok(PublicKey(ee.subject_public_key_info().as_ref().to_vec()))
}

fn self_signed(id: &Identity) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    let kp = id.key_pair()?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(|e| NetError::Key(e.to_string()))?;
    let cert = params.self_signed(&kp).map_err(|e| NetError::Key(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

fn check_tls13(algs: &WebPkiSupportedAlgorithms, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
    verify_tls13_signature(message, cert, dss, algs)
}

/// The device's check of the server: its key must be the pinned one.
#[derive(Debug)]
struct PinnedServer {
    key: PublicKey,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if certificate_key(end_entity)? == self.key {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        check_tls13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server's check of a device: its key must be on the allow list.
#[derive(Debug)]
struct AllowedDevices {
    allow: AllowList,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AllowedDevices {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, _intermediates: &[CertificateDer<'_>], _now: UnixTime) -> Result<ClientCertVerified, Error> {
        let key = certificate_key(end_entity)?;
        if self.allow.contains(&key) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(device = %key.fingerprint(), "refused a device whose key is not on the allow list");
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        check_tls13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server's configuration: TLS 1.3 only, a client certificate required and checked against
/// `allow`.
pub fn server_config(id: &Identity, allow: AllowList) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let p = provider();
    let algs = p.signature_verification_algorithms;
    let (chain, key) = self_signed(id)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .with_client_cert_verifier(Arc::new(AllowedDevices { allow, algs }))
        .with_single_cert(chain, key)
        .map_err(NetError::Tls)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // Devices do not resume TLS sessions (each connection authenticates afresh): no tickets.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The device's configuration: TLS 1.3 only, the server's key pinned; `id` is `None` only to
/// test that a server refuses a device without a key.
pub fn client_config(id: Option<&Identity>, server: PublicKey) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let p = provider();
    let algs = p.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer { key: server, algs }));
    let mut cfg = match id {
        Some(id) => {
            let (chain, key) = self_signed(id)?;
            builder.with_client_auth_cert(chain, key).map_err(NetError::Tls)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}
