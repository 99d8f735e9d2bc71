"""Generation on a Ray cluster (``launch.py --ray ADDRESS``): a Ray Serve deployment of engine workers.

Imported only with ``--ray``; without it nothing here runs and Ray is never imported. The UI/API process
keeps the queue, owners' turns, outputs and infotexts (``remote_worker``); each replica runs
``run_generation`` with its own ModelManager (``deployment``); ``connect`` starts and describes it.
"""
