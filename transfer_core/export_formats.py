"""The formats a run's model exports to, without TensorFlow: the CLI's help reads them."""

FORMATS = ("keras", "savedmodel", "tflite", "tflite-int8")
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite",
         "tflite-int8": "model_int8.tflite"}
FLOAT_FORMATS = ("keras", "savedmodel", "tflite")
