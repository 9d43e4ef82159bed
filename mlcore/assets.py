"""The Airflow Assets this platform produces, defined once with stable names.

Imported by DAG files only (it needs Airflow, nothing heavy).
"""

from airflow.sdk import Asset

CURATED_IMAGES = Asset(name="curated_images", uri="mlcore://lake/curated/images")
LABELED_IMAGES = Asset(name="labeled_images", uri="mlcore://lake/curated/images/labeled")
PREDICTIONS = Asset(name="predictions", uri="mlcore://lake/predictions")
