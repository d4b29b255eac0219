"""The migration toolkit: from a team's Celery code to a spike, and on to a workflow engine.

`graduate.migrate.inventory` reads a Celery codebase and ranks its flows;
`graduate.migrate.replay` gates a deploy of workflow code by replaying recorded histories.
"""
