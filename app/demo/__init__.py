"""The bundled "shapes" demo model: its data generator and the checker that reads pictures back."""
