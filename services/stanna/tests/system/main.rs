//! The whole system as its users see it, built in the test process by the composition root
//! (`stanna::System`, exactly as `stanna serve` builds it): the gateway's error table and
//! rate-limit headers, the REST key API against its OpenAPI document, the proxy, and the wiring
//! itself. One test binary for the package, each concern a module.

mod composition;
mod gateway;
mod isolation;
mod operability;
mod rest;
mod sessions;
mod stack;
