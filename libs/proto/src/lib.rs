//! Generated protobuf messages and gRPC clients/servers for the Kizuna API.
//!
//! The contracts live in `proto/kizuna/<package>/v1/*.proto` at the repository
//! root and are the single source of truth; this crate compiles them at build
//! time (with `protox`, no system `protoc`) into:
//!
//! - prost messages and enums, one module per protobuf package
//!   (`kizuna::leads::v1`, re-exported as [`leads`], and so on);
//! - tonic servers (`leads::leads_service_server::LeadsServiceServer` and the
//!   `LeadsService` trait) and clients
//!   (`leads::leads_service_client::LeadsServiceClient`) for every service;
//! - [`FILE_DESCRIPTOR_SET`], the encoded descriptors of every file (with
//!   comments and the well-known imports), for gRPC server reflection.
//!
//! [`time`] converts between `google.protobuf.Timestamp` and the integer
//! microseconds used for storage.

/// Modules mirroring the protobuf package hierarchy (`kizuna.<package>.v1`).
pub mod kizuna {
    /// Package `kizuna.type`: small shared types.
    pub mod r#type {
        /// Package `kizuna.type.v1`: money, dates, lifecycle stages, consent.
        pub mod v1 {
            // prost escapes the `type` keyword in the generated file name too.
            tonic::include_proto!("kizuna.r#type.v1");
        }
    }

    /// Package `kizuna.events`: the domain event envelope.
    pub mod events {
        /// Package `kizuna.events.v1`.
        pub mod v1 {
            tonic::include_proto!("kizuna.events.v1");
        }
    }

    /// Package `kizuna.leads`: marketing automation (MA).
    pub mod leads {
        /// Package `kizuna.leads.v1`.
        pub mod v1 {
            tonic::include_proto!("kizuna.leads.v1");
        }
    }

    /// Package `kizuna.deals`: sales force automation (SFA).
    pub mod deals {
        /// Package `kizuna.deals.v1`.
        pub mod v1 {
            tonic::include_proto!("kizuna.deals.v1");
        }
    }

    /// Package `kizuna.accounts`: customer relationship management (CRM).
    pub mod accounts {
        /// Package `kizuna.accounts.v1`.
        pub mod v1 {
            tonic::include_proto!("kizuna.accounts.v1");
        }
    }

    /// Package `kizuna.gateway`: identity, Customer 360, lifecycle transitions.
    pub mod gateway {
        /// Package `kizuna.gateway.v1`.
        pub mod v1 {
            tonic::include_proto!("kizuna.gateway.v1");
        }
    }
}

pub use kizuna::accounts::v1 as accounts;
pub use kizuna::deals::v1 as deals;
pub use kizuna::events::v1 as events;
pub use kizuna::gateway::v1 as gateway;
pub use kizuna::leads::v1 as leads;
pub use kizuna::r#type::v1 as types;

/// Re-exported so users need not depend on `prost-types` directly for
/// `Timestamp`, `FieldMask`, `Any`.
pub use prost_types;

/// Encoded `google.protobuf.FileDescriptorSet` of every Kizuna proto file and
/// its imports, with source info (comments). Feed it to
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kizuna_descriptor");

/// The files of [`FILE_DESCRIPTOR_SET`] that define `services` (fully qualified names such as
/// `kizuna.leads.v1.LeadsService`) and everything they import, in the set's order: what one
/// port's reflection needs, so it neither lists nor describes another port's service.
pub fn file_descriptor_set_for(services: &[&str]) -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    let all = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into this crate decodes");
    let defines = |file: &prost_types::FileDescriptorProto| {
        file.service.iter().any(|service| {
            services.contains(&format!("{}.{}", file.package(), service.name()).as_str())
        })
    };
    let mut needed: Vec<&str> = all
        .file
        .iter()
        .filter(|file| defines(file))
        .map(|file| file.name())
        .collect();
    let mut next = 0;
    while let Some(name) = needed.get(next).copied() {
        next += 1;
        if let Some(file) = all.file.iter().find(|file| file.name() == name) {
            for dependency in &file.dependency {
                if !needed.contains(&dependency.as_str()) {
                    needed.push(dependency);
                }
            }
        }
    }
    let file = all
        .file
        .iter()
        .filter(|file| needed.contains(&file.name()))
        .cloned()
        .collect();
    prost_types::FileDescriptorSet { file }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn a_service_gets_its_file_and_imports_only() {
        let set = super::file_descriptor_set_for(&["kizuna.leads.v1.LeadsService"]);
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for expected in [
            "kizuna/leads/v1/leads.proto",
            "kizuna/leads/v1/lead.proto",
            "kizuna/type/v1/consent.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        for absent in [
            "kizuna/deals/v1/deals.proto",
            "kizuna/gateway/v1/gateway.proto",
        ] {
            assert!(!names.contains(&absent), "{absent} in {names:?}");
        }
        // Every import of a kept file is kept.
        for file in &set.file {
            for dependency in &file.dependency {
                assert!(
                    names.contains(&dependency.as_str()),
                    "{dependency} of {}",
                    file.name()
                );
            }
        }
    }

    #[test]
    fn descriptor_set_has_every_service_and_its_imports() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("FILE_DESCRIPTOR_SET decodes");
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        for expected in [
            "google/protobuf/timestamp.proto",
            "google/protobuf/field_mask.proto",
            "kizuna/type/v1/money.proto",
            "kizuna/events/v1/event.proto",
            "kizuna/leads/v1/leads.proto",
            "kizuna/deals/v1/deals.proto",
            "kizuna/accounts/v1/accounts.proto",
            "kizuna/gateway/v1/gateway.proto",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        assert_eq!(
            services.len(),
            4,
            "exactly one service per domain package: {services:?}"
        );
        for expected in [
            "kizuna.leads.v1.LeadsService",
            "kizuna.deals.v1.DealsService",
            "kizuna.accounts.v1.AccountsService",
            "kizuna.gateway.v1.GatewayService",
        ] {
            assert!(services.iter().any(|s| s == expected), "{expected} missing");
        }
        // Comments are kept for reflection clients.
        assert!(
            fds.file
                .iter()
                .filter(|f| f.name().starts_with("kizuna/"))
                .all(|f| f.source_code_info.is_some())
        );
    }
}

/// Conversions between `google.protobuf.Timestamp` and microseconds since the
/// Unix epoch (UTC), the unit used for storage.
pub mod time {
    use prost_types::Timestamp;

    const MICROS_PER_SECOND: i64 = 1_000_000;
    const NANOS_PER_MICRO: i64 = 1_000;

    /// Converts microseconds since the Unix epoch (UTC) to a normalized
    /// `Timestamp` (`0 <= nanos < 1e9`, also for instants before 1970).
    pub fn to_timestamp(micros: i64) -> Timestamp {
        let seconds = micros.div_euclid(MICROS_PER_SECOND);
        let sub_micros = micros.rem_euclid(MICROS_PER_SECOND);
        Timestamp {
            seconds,
            // In 0..1e9, so the cast cannot truncate.
            nanos: (sub_micros * NANOS_PER_MICRO) as i32,
        }
    }

    /// Converts a `Timestamp` to microseconds since the Unix epoch (UTC).
    ///
    /// Sub-microsecond precision is dropped by rounding down (toward negative
    /// infinity), so `from_timestamp(&to_timestamp(m)) == m` for every `m`.
    /// Non-normalized input (negative or >= 1e9 `nanos`) is accepted, and
    /// values outside the `i64` range saturate instead of overflowing: this
    /// never panics, whatever a client sends.
    pub fn from_timestamp(ts: &Timestamp) -> i64 {
        // i128 holds every i64 seconds * 1e6 + i32 nanos / 1e3 exactly.
        let micros = i128::from(ts.seconds) * i128::from(MICROS_PER_SECOND)
            + i128::from(ts.nanos).div_euclid(i128::from(NANOS_PER_MICRO));
        i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn ts(seconds: i64, nanos: i32) -> Timestamp {
            Timestamp { seconds, nanos }
        }

        #[test]
        fn epoch_is_zero() {
            assert_eq!(to_timestamp(0), ts(0, 0));
            assert_eq!(from_timestamp(&ts(0, 0)), 0);
        }

        #[test]
        fn positive_value() {
            // 2026-01-02T03:04:05.678901Z
            let micros = 1_767_323_045_678_901;
            assert_eq!(to_timestamp(micros), ts(1_767_323_045, 678_901_000));
            assert_eq!(from_timestamp(&ts(1_767_323_045, 678_901_000)), micros);
        }

        #[test]
        fn round_trip() {
            for micros in [
                0,
                1,
                -1,
                999_999,
                1_000_000,
                -1_000_000,
                -1_000_001,
                1_767_323_045_678_901,
                -62_135_596_800_000_000, // 0001-01-01T00:00:00Z
                253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
                i64::MAX,
                i64::MIN,
            ] {
                let t = to_timestamp(micros);
                assert!(
                    (0..1_000_000_000).contains(&t.nanos),
                    "not normalized: {t:?}"
                );
                assert_eq!(from_timestamp(&t), micros, "round trip of {micros}");
            }
        }

        #[test]
        fn negative_values_are_normalized() {
            // One microsecond before the epoch.
            assert_eq!(to_timestamp(-1), ts(-1, 999_999_000));
            assert_eq!(from_timestamp(&ts(-1, 999_999_000)), -1);
            // 1969-12-31T23:59:58.5Z
            assert_eq!(to_timestamp(-1_500_000), ts(-2, 500_000_000));
            assert_eq!(from_timestamp(&ts(-2, 500_000_000)), -1_500_000);
        }

        #[test]
        fn nanos_are_truncated_down() {
            assert_eq!(from_timestamp(&ts(1, 1_999)), 1_000_001);
            assert_eq!(from_timestamp(&ts(0, 999)), 0);
            assert_eq!(from_timestamp(&ts(0, 999_999_999)), 999_999);
            // One nanosecond before the epoch floors to -1 µs.
            assert_eq!(from_timestamp(&ts(-1, 999_999_999)), -1);
        }

        #[test]
        fn non_normalized_input() {
            assert_eq!(from_timestamp(&ts(1, -500_000_000)), 500_000);
            assert_eq!(from_timestamp(&ts(0, 1_500_000_000)), 1_500_000);
        }

        #[test]
        fn extremes_saturate() {
            assert_eq!(from_timestamp(&ts(i64::MAX, 999_999_999)), i64::MAX);
            assert_eq!(from_timestamp(&ts(i64::MIN, -1)), i64::MIN);
        }
    }
}
