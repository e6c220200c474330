//! HTTP routes. Handlers are thin: verify, map, hand to [`crate::temporal::Gateway`], answer.

pub mod api;
pub mod billing;
pub mod callbacks;
pub mod codec;
pub mod events;
pub mod github;
pub mod health;
pub mod stack;
pub mod stripe;
