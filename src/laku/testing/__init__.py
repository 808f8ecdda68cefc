"""Test-only: what the test suite (tests/) and the benches (bench/) share to run a platform on a
throwaway database and build the seed's catalog over HTTP. No service imports it (the import
contract `testing-only-for-tests` checks it)."""
