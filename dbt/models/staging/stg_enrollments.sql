select
    id as enrollment_id,
    course_id,
    course_section_id,
    user_id,
    type as enrollment_type,
    workflow_state,
    coalesce(workflow_state = 'deleted', false) as is_deleted
from {{ source('canvas', 'enrollments') }}
