"""Jobs: batch analysis, video deepfake analysis and gallery import, done item by item.

* :mod:`.spool` keeps each job's inputs on disk until the job ends;
* :mod:`.store` is the job and item state in the database (the only state);
* :mod:`.handlers` does the work of one item per job kind;
* :mod:`.runner` runs one item idempotently: claim, work, finish once, retry
  transient errors, record permanent ones;
* :mod:`.executors` hands items to threads in the API process (embedded) or
  to Celery workers over Redis (:mod:`.celery_app`);
* :mod:`.service` is what the API calls: submit, status, results, cancel,
  and the sweeper that resumes, re-publishes and cleans up.
"""
