//! Stripe: the API client (through `async-stripe`), webhook verification, the Checkout
//! metadata Slipway writes and reads back, and the event log the catch-up reads ([`events`]).

mod client;
pub mod events;
pub mod metadata;
pub mod webhook;

pub use client::{CreatedCheckout, ExpiredCheckout, NewCheckout, StripeClient};
