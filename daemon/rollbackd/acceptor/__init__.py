"""Acceptors: processes beside the daemon that take webhook requests on its listen address.

One event loop is one core: a storm of distinct alerts that can act on nothing (notify-only, ignored,
unknown service) costs parsing, deciding and journaling each one, and the daemon's loop is the bound.
With ``webhook.acceptors: N`` the daemon starts N processes that accept on its own listening socket:

- a body whose alerts can never roll back, firing or resolved, with no active incident opened by a
  resolving one (``Intake.decides_alone``), is decided and journaled by the acceptor itself (the same
  Intake code, its own connection to the journal): its 202 still means "journaled";
- every other request (a body that may act or cancel, the API, /metrics) is handed to the daemon
  over a unix socket, and the daemon's answer is the answer;
- what the acceptor decided reaches the daemon as a report every 50 ms: the metrics' counts and the
  decisions to post, which the daemon's Teller coalesces with its own (one Slack message per window,
  as without acceptors).

The daemon supervises them (pool.py): one that exits unasked is started again; when the daemon dies
they see the channel close, stop accepting at once and finish what they took.
"""
