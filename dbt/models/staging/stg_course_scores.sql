-- Current course grade (a percentage) per student, from course_grade_change.
select
    course_id,
    user_id,
    current_score,
    final_score,
    workflow_state,
    updated_at
from {{ source('canvas', 'course_scores') }}
