//! The p4lb controller: owns endpoint/service/migration state and keeps the switch programmed.
