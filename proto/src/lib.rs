//! Protocol definitions: the P4Runtime v1 subset p4lb speaks and p4lb's own controller API.
