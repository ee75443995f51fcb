"""Kie callbacks: a verified receiver on the API server, and what the waiting side needs to hear of it.

``kie_callbacks`` holds the Airflow plugin (registered through the provider info, opt-in by configuration);
``receiver`` its FastAPI app; ``tokens`` the URL it is reached at; ``signature`` Kie's webhook signature;
``inbox`` where a verified callback is recorded for the trigger, the worker loop and the sensor; ``settings``
what the connection and Airflow's configuration say. Nothing here imports FastAPI until the app is built.
"""

from __future__ import annotations
