//! The home profile: where a user's Home Manager profile and generations live, the GC root
//! of the active generation, and activation, exactly as ../shared/hm-contract.md and the
//! `home-manager` script define them.
