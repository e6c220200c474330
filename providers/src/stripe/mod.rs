//! Stripe: the API client (through `async-stripe`), webhook verification and the Checkout
//! metadata Slipway writes and reads back.

mod client;
pub mod metadata;
pub mod webhook;

pub use client::{CreatedCheckout, NewCheckout, StripeClient};
