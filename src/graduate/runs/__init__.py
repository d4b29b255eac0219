"""One run, from start to stored record: the session, the supervisor of its worker
processes, and the typed record the evidence store keeps.

(Not `graduate.run`: that name is the public library function `graduate.run`, and a
subpackage of the same name would replace it on import.)
"""
