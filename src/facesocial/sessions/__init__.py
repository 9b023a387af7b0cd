"""Continuous authentication: a client streams webcam frames, the server decides per frame.

* :mod:`.policy` turns per-frame scores into one decision (allow, lock_screen,
  sign_out, block) with grace periods and smoothing, from a versioned policy file;
* :mod:`.analyzer` measures a frame: faces, identity against the bound person,
  anti-spoofing, phones;
* :mod:`.evidence` keeps the frame and a JSON record of every non-allow decision;
* :mod:`.capacity` admits sessions into M pipelines of N sessions (a queue, then
  ``system_full``);
* :mod:`.registry` shares live sessions and block events between API processes
  (Redis) or within one (memory);
* :mod:`.service` ties them together for the WebSocket endpoint and the admin API.
"""
