"""The BentoML 1.4 service of the serving benchmark (runs in the BentoML venv, not ours).

    BENTOML_HOME=<store> bentoml serve bento_service:BankMarketing --port 3000

`POST /predict` with `{"rows": [{column: value, ...}, ...]}` answers the class
probabilities, one list per row, from the pipeline in BentoML's model store.
"""

import bentoml
import pandas as pd

MODEL_TAG = "bank_marketing:latest"


@bentoml.service
class BankMarketing:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(MODEL_TAG)

    @bentoml.api
    def predict(self, rows: list[dict]) -> list[list[float]]:
        return self.model.predict_proba(pd.DataFrame(rows)).tolist()
