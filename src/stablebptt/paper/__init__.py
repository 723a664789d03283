"""The paper's own reproductions: the toy figures, the linear-quadratic fixed points, the Brax peer comparison."""
