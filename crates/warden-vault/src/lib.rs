//! Warden's vault (temporary root from the `vault-seal` branch: the seal and Shamir only;
//! `vault-core` brings the crate itself).

pub mod seal;
pub mod shamir;
