"""The recorded points: where in a layer the recorder takes values, and how the figures and the report name them.
Defined here once, without torch: the config (its histogram ranges), the recorder, the figures, the report and the
command line's --point all read these.

    pre_norm       the input of the layer's norm  (fc output Wx+b, or the activation output if placement=after)
    post_norm      the output of the layer's norm (= pre_norm when norm is none)
    post_act       the output of the activation   (layer 0, the input, has the identity as activation)
    grad_pre_norm  d(loss)/d(pre_norm): the backpropagated gradient, in every hidden layer
    grad_weight    d(loss)/d(W): the layer's weight gradient, in every hidden layer

Over time (a sequence model's time table, record.time), in every hidden layer, besides the forward points:
    pre_norm_h     the input of the hidden-to-hidden norm (rnn, lstm with model.norm_paths both or input)
    post_norm_h    its output
    state          the hidden state h_t (the transformer's: the block's output at position t), with dL/dh_t
"""

FORWARD = ("pre_norm", "post_norm", "post_act")  # in every recorded layer
PRE_NORM, POST_NORM, POST_ACT = FORWARD
GRADIENT = ("grad_pre_norm", "grad_weight")  # in every hidden layer
ALL = (*FORWARD, *GRADIENT)
PRE_NORM_H, POST_NORM_H, STATE = "pre_norm_h", "post_norm_h", "state"
OVER_TIME = (*FORWARD, PRE_NORM_H, POST_NORM_H, STATE)  # the time table's points
GRAD_STATE = "grad_state"  # dL/dh_t, taken with state: the time table's grad_norm column of state's rows
TIME_ONLY = (PRE_NORM_H, POST_NORM_H, STATE, GRAD_STATE)  # taken over time only, never histogrammed
GRADIENT_AT = {PRE_NORM: GRADIENT[0], STATE: GRAD_STATE}  # a point -> the point of the loss's gradient there

TIME_PERCENTILES = (1, 20, 50, 80, 99)  # as the distribution figure's (views/data.py)
TIME_COLUMNS = (  # the time table's columns after step, layer, t, point (docs/results-format.md)
    "n",
    *(f"p{q}" for q in TIME_PERCENTILES),
    "saturated_fraction",
    "dead_fraction",
    "grad_norm",
)

WORDS = {  # a figure's title, the report's captions
    "pre_norm": "before the norm",
    "post_norm": "after the norm",
    "post_act": "after the activation",
    "grad_pre_norm": "gradient dL/dz at the norm's input",
    "grad_weight": "weight gradient dL/dW",
}
TIME_WORDS = WORDS | {  # the time table's points
    PRE_NORM_H: "before the hidden-to-hidden norm",
    POST_NORM_H: "after the hidden-to-hidden norm",
    STATE: "hidden state h_t",
}
