"""A group buy driven over HTTP as the seed's steps 2-8 drive it: opened, joined and paid through
the real saga and the Xendit sandbox, ended, closed; and what its buyers, stock and orders show.

A session's end time is moved into the past in its own table: a test stands in for the clock
instead of sleeping until the session ends (its invoices, due at the original end time, stay
payable until the close)."""

OPEN = ("forming", "active", "moq_reached")
